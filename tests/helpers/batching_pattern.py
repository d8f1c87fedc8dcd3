"""The pattern backend with batching declared: shared by the batching and bad-frame tests."""

from __future__ import annotations

from streaming.generator import WindowJob

from .pattern_backend import PatternGenerator


class BatchingPattern(PatternGenerator):
    """The pattern backend with the batching extension: records every pass it is asked to run."""

    def __init__(self, max_batch: int = 4, fail_prepare: str | None = None, **kw) -> None:
        super().__init__(**kw)
        self.max_batch = max_batch
        self.fail_prepare = fail_prepare
        self.passes: list[list[str]] = []
        self.singles: list[str] = []

    def batch_key(self, state, job: WindowJob):
        return job.extras.get("key", "same")

    def prepare_window(self, state, job: WindowJob):
        if job.session_id == self.fail_prepare:
            raise RuntimeError("simulated bad window")
        return state, job

    def generate(self, state, job):
        self.singles.append(job.session_id)
        yield from super().generate(state, job)

    def generate_batch(self, works):
        self.passes.append([job.session_id for _, job in works])
        iters = [PatternGenerator.generate(self, state, job) for state, job in works]
        for frames in zip(*iters, strict=True):
            yield from enumerate(frames)
