"""One worker, many sessions: windows of different sessions that are ready together run as one pass."""

from __future__ import annotations

import asyncio
import threading
import time
import wave

import numpy as np
import pytest
import torch

from streaming.engine import Engine
from streaming.generator import Avatar, BatchingGenerator, WindowJob
from streaming.planner import PlannerSettings
from streaming.session import SessionSettings
from streaming.worker import GeneratorWorker, JobCancelled

from ..helpers.batching_pattern import BatchingPattern
from ..helpers.tiny_infinitetalk import tiny_bundle, tiny_generator


def read_wav(path) -> np.ndarray:
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768.0




def _job(sid: str, spec, key: str = "same") -> WindowJob:
    return WindowJob(sid, 0, 0, np.zeros((1, spec.job_samples), np.float32), True, {"key": key})


def _blocked_worker(gen) -> tuple[GeneratorWorker, threading.Event]:
    worker = GeneratorWorker(gen)
    gate = threading.Event()
    worker.call(gate.wait)  # hold the worker so that the jobs below are all queued together
    return worker, gate


def test_queued_jobs_of_different_sessions_with_one_key_run_as_one_pass():
    gen = BatchingPattern(max_batch=3)
    assert isinstance(gen, BatchingGenerator)
    worker, gate = _blocked_worker(gen)
    got: dict[str, list[int]] = {}
    try:
        futs = {}
        for sid, key in (("a", "x"), ("b", "x"), ("c", "y"), ("d", "x"), ("e", "x")):
            got[sid] = []
            futs[sid] = worker.submit_window({"id": sid}, _job(sid, gen.window, key),
                                             lambda i, f, sid=sid: got[sid].append(i), deadline=time.monotonic())
        gate.set()
        for f in futs.values():
            assert f.result(10) == gen.window.new_frames
    finally:
        worker.stop()
    # a, b, d share key x (max 3); e (x) and c (y) have no partner left, so they run alone.
    assert gen.passes == [["a", "b", "d"]]
    assert sorted(gen.singles) == ["c", "e"]
    assert all(v == list(range(gen.window.new_frames)) for v in got.values())
    assert worker.stats.batches == 1 and worker.stats.batched_jobs == 3 and worker.stats.batch_sizes == {3: 1, 1: 2}


def test_sessions_of_the_last_pass_get_a_moment_to_rejoin_before_the_group_is_split():
    gen = BatchingPattern()
    worker = GeneratorWorker(gen, gather_s=1.0)
    gate = threading.Event()
    worker.call(gate.wait)
    try:
        first = [worker.submit_window({"id": s}, _job(s, gen.window), lambda i, f: None, deadline=time.monotonic())
                 for s in ("a", "b")]
        gate.set()
        for f in first:
            f.result(10)
        a2 = worker.submit_window({"id": "a"}, _job("a", gen.window), lambda i, f: None, deadline=time.monotonic())
        time.sleep(0.1)  # b's next job comes a little later, as it would from its session
        b2 = worker.submit_window({"id": "b"}, _job("b", gen.window), lambda i, f: None, deadline=time.monotonic())
        a2.result(10), b2.result(10)
    finally:
        worker.stop()
    assert gen.passes == [["a", "b"], ["a", "b"]] and gen.singles == []


def test_a_lone_job_runs_at_once_through_generate():
    gen = BatchingPattern()
    worker = GeneratorWorker(gen)
    try:
        t0 = time.monotonic()
        worker.submit_window({"id": "a"}, _job("a", gen.window), lambda i, f: None, deadline=t0).result(10)
        assert time.monotonic() - t0 < 1.0
    finally:
        worker.stop()
    assert gen.passes == [] and gen.singles == ["a"]


def test_a_failing_or_cancelled_job_fails_alone_and_the_others_of_its_pass_complete():
    gen = BatchingPattern(fail_prepare="b")
    worker, gate = _blocked_worker(gen)
    stop_c = threading.Event()
    try:
        futs = {sid: worker.submit_window({"id": sid}, _job(sid, gen.window),
                                          (lambda i, f: stop_c.set()) if sid == "c" else (lambda i, f: None),
                                          deadline=time.monotonic(), cancelled=stop_c.is_set if sid == "c" else lambda: False)
                for sid in ("a", "b", "c")}
        gate.set()
        assert futs["a"].result(10) == gen.window.new_frames
        with pytest.raises(RuntimeError, match="simulated bad window"):
            futs["b"].result(10)
        with pytest.raises(JobCancelled):  # c cancelled itself after its first frame
            futs["c"].result(10)
    finally:
        worker.stop()
    assert gen.passes == [["a", "c"]]
    assert worker.stats.jobs_done == 2 and worker.stats.jobs_failed == 1 and worker.stats.jobs_cancelled == 1  # a + the gate


# ------------------------------------------------------------------------------ the real model
@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    torch.set_num_threads(1)
    return tiny_bundle(tmp_path_factory.mktemp("tiny-batching"))


def _avatar(seed: int) -> Avatar:
    return Avatar(f"face{seed}", np.random.default_rng(seed).integers(0, 256, (1, 40, 40, 3), np.uint8))


async def _render(gen, speeches: list[np.ndarray], max_batch: int) -> tuple[list[list], dict]:
    """Offline sessions, one per speech, all fed at once while the worker is held."""
    engine = Engine(gen, max_batch=max_batch)
    gate = threading.Event()
    try:
        settings = SessionSettings(planner=PlannerSettings(realtime=False), max_buffer_s=30)
        sessions = [await engine.open_session(_avatar(k), settings) for k in range(len(speeches))]
        engine.worker.call(gate.wait)
        for s, speech in zip(sessions, speeches, strict=True):
            s.push_audio(speech)
            s.end_input()

        async def frames(s):
            return [f async for f in s.frames()]

        tasks = [asyncio.create_task(frames(s)) for s in sessions]
        while engine.worker.queue_depth < len(sessions):
            await asyncio.sleep(0.01)
        gate.set()
        out = await asyncio.gather(*tasks)
        stats = engine.stats()
    finally:
        gate.set()
        await engine.shutdown()
    return out, stats


async def test_sessions_on_one_worker_are_batched_and_equal_their_unbatched_output(bundle, speech_dir):
    names = ("speech_en1.wav", "speech_en2.wav", "speech_de1.wav")
    speeches = [read_wav(speech_dir / n)[: 9000 + 3000 * k] for k, n in enumerate(names)]
    batched, stats = await _render(tiny_generator(bundle), speeches, max_batch=4)
    alone, alone_stats = await _render(tiny_generator(bundle), speeches, max_batch=1)
    assert stats["worker_batches"] >= 1 and stats["worker_batched_jobs"] >= 3  # the first pass holds all three
    assert alone_stats["worker_batches"] == 0
    for got, want in zip(batched, alone, strict=True):
        assert len(got) == len(want) > 0
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a.audio, b.audio)
            assert np.abs(a.image.astype(int) - b.image.astype(int)).max() <= 1
    # The sessions made different videos (else equality would prove little).
    assert np.abs(batched[0][0].image.astype(int) - batched[1][0].image.astype(int)).mean() > 1
