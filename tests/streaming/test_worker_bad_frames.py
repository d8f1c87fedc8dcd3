"""A backend that yields a frame of the wrong size or type fails that job only (issue 5): alone, or inside
a batched pass, whose other jobs still deliver every frame."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from streaming.generator import WindowJob
from streaming.worker import GeneratorWorker

from ..helpers.batching_pattern import BatchingPattern


class BadFrameFor(BatchingPattern):
    """Session `bad` gets a float frame (single path) or a frame 2 rows short (batched path) as frame 1."""

    def _spoil(self, job, frames):
        for i, f in enumerate(frames):
            yield (f.astype(np.float32) if i == 1 and job.session_id == "bad" else f)

    def generate(self, state, job):
        yield from self._spoil(job, super().generate(state, job))

    def generate_batch(self, works):
        for k, frame in super().generate_batch(works):
            job = works[k][1]
            yield k, (frame[:-2] if job.session_id == "bad" and frame[0, 0, 1] == 1 else frame)


def job(sid: str, spec) -> WindowJob:
    return WindowJob(sid, 0, 0, np.zeros((1, spec.job_samples), np.float32), True, {"key": "same"})


@pytest.mark.parametrize("batched", [False, True])
def test_a_bad_frame_fails_its_job_and_nothing_else(batched):
    gen = BadFrameFor(max_batch=3 if batched else 1)
    w, h = gen.size
    worker = GeneratorWorker(gen)
    gate = threading.Event()
    worker.call(gate.wait)  # queue the jobs together so the batched path takes them as one pass
    got: dict[str, list[int]] = {"bad": [], "ok1": [], "ok2": []}
    try:
        futs = {sid: worker.submit_window({"id": sid}, job(sid, gen.window), lambda i, f, sid=sid: got[sid].append(i),
                                          deadline=time.monotonic(), frame_shape=(h, w, 3)) for sid in got}
        gate.set()
        with pytest.raises(ValueError, match="bad frame.*expected uint8"):
            futs["bad"].result(5)
        assert futs["ok1"].result(5) == futs["ok2"].result(5) == gen.window.new_frames
        assert got["ok1"] == got["ok2"] == list(range(gen.window.new_frames))
        assert got["bad"] == [0]  # its good first frame went out, then the job failed
        assert bool(gen.passes) is batched
        assert worker.stats.jobs_failed == 1 and worker.alive
    finally:
        worker.stop()
