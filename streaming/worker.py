"""The single worker thread that owns the generator and runs the window jobs of every session.

The asyncio loop must never block on compute, and a GPU model must be driven from one place:
sessions submit jobs here and get frames back through callbacks. Jobs run earliest-deadline
first, so a session whose playout buffer is about to run dry is served before one that has
video to spare. A job that raises fails only its own future; the worker keeps serving.

Batching: when the backend is a `BatchingGenerator`, the job taken from the queue is joined by
the other sessions' queued jobs with the same `batch_key` (up to `max_batch`), and they run as one
pass (one DiT call per step for all). A lone session's job never waits: it runs at once, alone,
through the backend's ordinary `generate`. The one wait there is: when sessions of the last batched
pass have not re-submitted yet (they finish together, and their next jobs arrive a few milliseconds
apart), the worker gives them up to `gather_s` to join, instead of splitting the group for good.
"""

from __future__ import annotations

import concurrent.futures
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable
from collections.abc import Generator as PyGenerator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .generator import BatchingGenerator, Generator, WindowJob

log = logging.getLogger(__name__)

FrameCallback = Callable[[int, np.ndarray], None]


class JobCancelled(Exception):
    """The job was cancelled (interrupt or close) before it finished; partial frames were discarded."""


@dataclass
class _Window:
    """What a window task carries so that the worker can batch it with others."""

    state: Any
    job: WindowJob
    on_frame: FrameCallback
    key: Hashable | None = None
    keyed: bool = False
    frame_shape: tuple[int, int, int] | None = None


@dataclass(order=True)
class _Task:
    deadline: float
    seq: int
    fn: Callable[[], Any] = field(compare=False)
    future: concurrent.futures.Future = field(compare=False)
    cancelled: Callable[[], bool] = field(compare=False, default=lambda: False)
    window: _Window | None = field(compare=False, default=None)


@dataclass
class WorkerStats:
    """batches: passes that ran two or more jobs together; batched_jobs: jobs run in those passes;
    batch_sizes: passes by size (size 1 = a job run alone)."""

    jobs_done: int = 0
    jobs_failed: int = 0
    jobs_cancelled: int = 0
    busy_seconds: float = 0.0
    batches: int = 0
    batched_jobs: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)


class GeneratorWorker:
    """Runs callables and window jobs on one thread, earliest deadline first."""

    def __init__(self, generator: Generator, name: str = "generator-worker", max_batch: int | None = None,
                 gather_s: float = 0.02) -> None:
        """max_batch: most jobs run together (default: the backend's `max_batch`; 1 = never batch).
        gather_s: longest wait for the other sessions of the last batched pass (see the module docstring)."""
        self.generator = generator
        self.stats = WorkerStats()
        if isinstance(generator, BatchingGenerator):
            self.max_batch = max(1, max_batch if max_batch is not None else generator.max_batch)
        else:
            self.max_batch = 1
        self.gather_s = gather_s
        self._last_pass: set[str] = set()  # sessions of the last batched pass
        self._heap: list[_Task] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def queue_depth(self) -> int:
        return len(self._heap)

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
                if isinstance(frames, PyGenerator):  # a generator function's frames: run its cleanup now
                    frames.close()
            if count != expected:
                raise RuntimeError(f"backend {self.generator.name!r} yielded {count} frames, expected {expected}")
            return count

        return self._put(run, deadline, cancelled, _Window(state, job, on_frame, frame_shape=frame_shape))

    def _put(
        self, fn: Callable[[], Any], deadline: float | None, cancelled: Callable[[], bool] = lambda: False,
        window: _Window | None = None,
    ) -> concurrent.futures.Future:
        if self._stopping.is_set():
            raise RuntimeError("generator worker is stopped")
        fut: concurrent.futures.Future = concurrent.futures.Future()
        due = time.monotonic() if deadline is None else deadline
        with self._cond:
            heapq.heappush(self._heap, _Task(due, next(self._seq), fn, fut, cancelled, window))
            self._cond.notify()
        return fut

    def _get(self) -> _Task:
        with self._cond:
            while not self._heap:
                self._cond.wait()
            return heapq.heappop(self._heap)

    def _run(self) -> None:
        while True:
            task = self._get()
            if task.fn is _STOP:
                break
            batch = self._gather(task) if self.max_batch > 1 and task.window is not None else [task]
            started = time.perf_counter()
            try:
                if len(batch) > 1:
                    self._run_batch(batch)
                else:
                    self._run_one(task)
            finally:
                self.stats.busy_seconds += time.perf_counter() - started

    def _run_one(self, task: _Task) -> None:
        if not task.future.set_running_or_notify_cancel():
            return
        if task.window is not None:
            self._count_batch(1)
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

    # ------------------------------------------------------------------ batching
    def _key(self, task: _Task) -> Hashable | None:
        w = task.window
        assert w is not None
        if not w.keyed:
            w.keyed = True
            try:
                w.key = self.generator.batch_key(w.state, w.job)  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001 - a job the backend cannot key simply runs alone
                log.exception("batch_key failed; the job runs alone")
                w.key = None
        return w.key

    def _gather(self, task: _Task) -> list[_Task]:
        """The task plus queued window jobs of other sessions with the same batch key, earliest first."""
        if self._key(task) is None or task.cancelled():
            self._last_pass = set()
            return [task]
        assert task.window is not None
        me = task.window.job.session_id
        with self._cond:
            expected = self._last_pass - {me}
            deadline = time.monotonic() + self.gather_s
            while (expected - self._queued_sessions() and self._partners(task) < self.max_batch - 1
                   and (left := deadline - time.monotonic()) > 0):
                self._cond.wait(left)
            sessions = {me}
            picked = [task]
            for other in sorted(self._heap):
                if len(picked) >= self.max_batch:
                    break
                w = other.window
                if w is None or w.job.session_id in sessions or other.future.cancelled() or other.cancelled():
                    continue
                if self._key(other) != self._key(task):
                    continue
                picked.append(other)
                sessions.add(w.job.session_id)
            if len(picked) > 1:
                taken = {id(t) for t in picked}
                self._heap = [t for t in self._heap if id(t) not in taken]
                heapq.heapify(self._heap)
        self._last_pass = sessions if len(picked) > 1 else set()
        return picked

    def _partners(self, task: _Task) -> int:
        """Queued jobs of other sessions that could join `task`'s pass now."""
        assert task.window is not None
        me, key = task.window.job.session_id, self._key(task)
        return len({t.window.job.session_id for t in self._heap
                    if t.window is not None and t.window.job.session_id != me and self._key(t) == key})

    def _queued_sessions(self) -> set[str]:
        return {t.window.job.session_id for t in self._heap if t.window is not None}

    def _count_batch(self, size: int) -> None:
        self.stats.batch_sizes[size] = self.stats.batch_sizes.get(size, 0) + 1
        if size > 1:
            self.stats.batches += 1
            self.stats.batched_jobs += size

    def _fail(self, task: _Task, exc: BaseException) -> None:
        if isinstance(exc, JobCancelled):
            self.stats.jobs_cancelled += 1
        else:
            self.stats.jobs_failed += 1
        task.future.set_exception(exc)

    def _run_batch(self, tasks: list[_Task]) -> None:
        """Prepare each job (failures stay with their job), then run the rest as one backend pass."""
        gen: Any = self.generator
        expected = gen.window.new_frames
        live: list[tuple[_Task, Any]] = []
        for t in tasks:
            if not t.future.set_running_or_notify_cancel():
                continue
            w = t.window
            assert w is not None
            if t.cancelled():
                self._fail(t, JobCancelled(w.job.session_id))
                continue
            try:
                live.append((t, gen.prepare_window(w.state, w.job)))
            except BaseException as exc:  # noqa: BLE001 - fails only this job
                log.exception("preparing a window failed on the generator worker")
                self._fail(t, exc)
        if not live:
            return
        self._count_batch(len(live))
        counts = [0] * len(live)
        open_ = [True] * len(live)
        frames = None
        try:
            frames = gen.generate_batch([work for _, work in live])
            for k, frame in frames:
                if not open_[k]:
                    continue
                t = live[k][0]
                w = t.window
                assert w is not None
                if t.cancelled():
                    open_[k] = False
                    self._fail(t, JobCancelled(w.job.session_id))
                    continue
                if counts[k] >= expected:
                    raise RuntimeError(f"backend {gen.name!r} yielded more than {expected} frames for one window")
                if w.frame_shape is not None:
                    try:
                        check_frame(frame, w.frame_shape, gen.name)
                    except ValueError as exc:  # this job's frame is bad: the rest of the pass goes on
                        log.error("session %s: %s", w.job.session_id, exc)
                        open_[k] = False
                        self._fail(t, exc)
                        continue
                w.on_frame(counts[k], frame)
                counts[k] += 1
                if counts[k] == expected:  # done: its session may plan the next window right away
                    open_[k] = False
                    self.stats.jobs_done += 1
                    t.future.set_result(expected)
        except BaseException as exc:  # noqa: BLE001 - the pass failed: every unfinished job of it fails
            log.exception("batched pass of %d jobs failed on the generator worker", len(live))
            for k, (t, _) in enumerate(live):
                if open_[k]:
                    open_[k] = False
                    self._fail(t, exc)
        finally:
            if isinstance(frames, PyGenerator):
                frames.close()
        for k, (t, _) in enumerate(live):
            if open_[k]:
                self._fail(t, RuntimeError(f"backend {gen.name!r} yielded {counts[k]} frames, expected {expected}"))

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the job in progress, fail queued ones, and join the thread."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        with self._cond:
            pending, self._heap = self._heap, []
            for task in pending:
                task.future.cancel()
            heapq.heappush(self._heap, _Task(float("-inf"), -1, _STOP, concurrent.futures.Future()))
            self._cond.notify()
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
