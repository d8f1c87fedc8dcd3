"""Optional backend capabilities are declared through the protocols of streaming/generator.py and
checked with isinstance, never probed with getattr (issue 14, item 3)."""

from __future__ import annotations

import threading

from streaming.engine import Engine
from streaming.generator import BatchingGenerator, ClosingGenerator
from streaming.worker import GeneratorWorker

from ..helpers.pattern_backend import PatternGenerator


class _Closing(PatternGenerator):
    """A backend that holds something beyond its sessions."""

    def __init__(self) -> None:
        super().__init__()
        self.closed_on: list[str] = []

    def close(self) -> None:
        self.closed_on.append(threading.current_thread().name)


async def test_engine_shutdown_closes_a_closing_backend_once_on_the_worker_thread():
    gen = _Closing()
    assert isinstance(gen, ClosingGenerator) and not isinstance(PatternGenerator(), ClosingGenerator)
    engine = Engine(gen)
    await engine.shutdown()
    assert gen.closed_on == ["generator-worker"]


class _BatchMethodsOnly(PatternGenerator):
    """Has the batching methods but does not declare `max_batch`: not a BatchingGenerator."""

    def batch_key(self, state, job):
        return 0

    def prepare_window(self, state, job):
        return (state, job)

    def generate_batch(self, works):
        yield from ()


def test_the_worker_batches_only_backends_declaring_the_batching_protocol():
    undeclared = GeneratorWorker(_BatchMethodsOnly(), max_batch=4)
    try:
        assert undeclared.max_batch == 1
    finally:
        undeclared.stop()
    declared = _BatchMethodsOnly()
    declared.max_batch = 3
    worker = GeneratorWorker(declared)
    try:
        assert isinstance(declared, BatchingGenerator) and worker.max_batch == 3
    finally:
        worker.stop()
