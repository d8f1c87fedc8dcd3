"""The single worker thread that owns the generator and runs the window jobs of every session.

The asyncio loop must never block on compute, and a GPU model must be driven from one place:
sessions submit jobs here and get frames back through callbacks. Jobs run earliest-deadline
first, so a session whose playout buffer is about to run dry is served before one that has
video to spare. A job that raises fails only its own future; the worker keeps serving.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .generator import Generator, WindowJob

log = logging.getLogger(__name__)

FrameCallback = Callable[[int, np.ndarray], None]


class JobCancelled(Exception):
    """The job was cancelled (interrupt or close) before it finished; partial frames were discarded."""


@dataclass(order=True)
class _Task:
    deadline: float
    seq: int
    fn: Callable[[], Any] = field(compare=False)
    future: concurrent.futures.Future = field(compare=False)
    cancelled: Callable[[], bool] = field(compare=False, default=lambda: False)


@dataclass
class WorkerStats:
    jobs_done: int = 0
    jobs_failed: int = 0
    jobs_cancelled: int = 0
    busy_seconds: float = 0.0


class GeneratorWorker:
    """Runs callables and window jobs on one thread, earliest deadline first."""

    def __init__(self, generator: Generator, name: str = "generator-worker") -> None:
        self.generator = generator
        self.stats = WorkerStats()
        self._queue: queue.PriorityQueue[_Task] = queue.PriorityQueue()
        self._seq = itertools.count()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def call(self, fn: Callable[..., Any], *args: Any, deadline: float | None = None) -> concurrent.futures.Future:
        """Run `fn(*args)` on the worker thread (e.g. open/close a session); returns a future."""
        return self._put(lambda: fn(*args), deadline)

    def submit_window(
        self,
        state: Any,
        job: WindowJob,
        on_frame: FrameCallback,
        *,
        deadline: float,
        cancelled: Callable[[], bool] = lambda: False,
        frame_shape: tuple[int, int, int] | None = None,
    ) -> concurrent.futures.Future:
        """Generate one window; `on_frame(i, frame)` is called on the worker thread for each frame.

        The future resolves to the number of frames produced, or raises the generator's error, or
        `JobCancelled` when `cancelled()` turned true (checked before starting and between frames).
        frame_shape: (H, W, 3) the frames must have; a backend yielding anything else (another size,
        dtype, a tensor) fails the job (its session) instead of reaching the encoders.
        """
        expected = self.generator.window.new_frames

        def run() -> int:
            if cancelled():
                raise JobCancelled(job.session_id)
            frames = self.generator.generate(state, job)
            count = 0
            try:
                for frame in frames:
                    if cancelled():
                        raise JobCancelled(job.session_id)
                    if count >= expected:
                        raise RuntimeError(
                            f"backend {self.generator.name!r} yielded more than {expected} frames for one window"
                        )
                    if frame_shape is not None:
                        check_frame(frame, frame_shape, self.generator.name)
                    on_frame(count, frame)
                    count += 1
            finally:
                close = getattr(frames, "close", None)
                if close is not None:
                    close()
            if count != expected:
                raise RuntimeError(f"backend {self.generator.name!r} yielded {count} frames, expected {expected}")
            return count

        return self._put(run, deadline, cancelled)

    def _put(
        self, fn: Callable[[], Any], deadline: float | None, cancelled: Callable[[], bool] = lambda: False
    ) -> concurrent.futures.Future:
        if self._stopping.is_set():
            raise RuntimeError("generator worker is stopped")
        fut: concurrent.futures.Future = concurrent.futures.Future()
        due = time.monotonic() if deadline is None else deadline
        self._queue.put(_Task(due, next(self._seq), fn, fut, cancelled))
        return fut

    def _run(self) -> None:
        while True:
            task = self._queue.get()
            if task.fn is _STOP:
                break
            if not task.future.set_running_or_notify_cancel():
                continue
            started = time.perf_counter()
            try:
                result = task.fn()
            except JobCancelled as exc:
                self.stats.jobs_cancelled += 1
                task.future.set_exception(exc)
            except BaseException as exc:  # noqa: BLE001 - any backend error fails only this job
                self.stats.jobs_failed += 1
                log.exception("job failed on the generator worker")
                task.future.set_exception(exc)
            else:
                self.stats.jobs_done += 1
                task.future.set_result(result)
            finally:
                self.stats.busy_seconds += time.perf_counter() - started

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the job in progress, fail queued ones, and join the thread."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        pending: list[_Task] = []
        while True:
            try:
                pending.append(self._queue.get_nowait())
            except queue.Empty:
                break
        for task in pending:
            task.future.cancel()
        self._queue.put(_Task(float("-inf"), -1, _STOP, concurrent.futures.Future()))
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("generator worker did not stop within %.1f s", timeout)


def check_frame(frame: Any, shape: tuple[int, int, int], backend: str) -> None:
    """Raise ValueError unless `frame` is a uint8 numpy array of `shape`."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.shape != shape:
        got = f"{type(frame).__name__} {getattr(frame, 'dtype', '')} {list(getattr(frame, 'shape', []))}"
        raise ValueError(f"backend {backend!r} yielded a bad frame: {got.strip()}; expected uint8 {list(shape)}")


def _STOP() -> None:  # sentinel task
    return None
