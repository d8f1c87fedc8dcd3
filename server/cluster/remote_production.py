"""The gateway's end of a session's seam: `ProductionInput` as calls to the session's worker.

Two loops per session, each with one call in flight so messages keep their order:

- send: the transport side's messages (audio chunks, playout reports, interrupts, end of input) are
  queued and sent as one `feed` call per batch (what arrived while the previous call ran, and within
  `FEED_LINGER_S` of the first);
- take: a long poll (`take`, waiting up to `TAKE_WAIT_S` on the worker) returns everything the model
  side made since the last one (frames with their audio, idle cuts, audio consumed, done/failed) and
  its current stats, which `stats()` then answers from without a call.

Each call has a timeout; a call that fails, times out, or finds the session unknown (the worker
restarted) fails the session with `worker_lost`, and the session closes (docs/cluster.md).
Frames come back as raw RGB (what WebRTC's encoder and the websocket's JPEG encoder both start
from); each image is copied out of Ray's object store at once, so the store holds no frame for
longer than one take.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from streaming.link import AudioChunk, Interrupt, PlayoutReport, ProductionOutput, ProductionStats
from streaming.output import PendingFrame
from streaming.session_settings import SessionError

log = logging.getLogger(__name__)

TAKE_WAIT_S = 0.25
# Fewer, fuller calls: what the transport side sends in this long after its first message goes in one
# feed; a take that found something waits this long for the rest of the burst (a window's frames).
# Both are well inside the planner's 120 ms margin; bench/cluster.py measures the CPU they save.
FEED_LINGER_S = 0.02
TAKE_LINGER_S = 0.01


@dataclasses.dataclass
class LinkCounters:
    """What crossed between this gateway and its workers, all sessions together (payload bytes: the
    arrays' sizes; Ray's framing adds little). `/metrics` exposes them (network sizing, bench/cluster.py)."""

    calls: int = 0
    frames: int = 0
    bytes_to_workers: int = 0
    bytes_from_workers: int = 0


class RemoteProduction:
    """See the module docstring. `handle`: the worker actor; `on_end`: called once when closed."""

    quality = None  # adaptive quality runs on the worker; its level comes in the stats

    def __init__(self, handle: Any, worker_index: int, session_id: str, output: ProductionOutput,
                 rpc_timeout_s: float, on_end: Callable[[], None], counters: LinkCounters) -> None:
        self.handle = handle
        self.worker_index = worker_index
        self.session_id = session_id
        self.counters = counters
        self._output = output
        self._timeout = rpc_timeout_s
        self._on_end = on_end
        self._pending: list[tuple[str, Any]] = []
        self._has_input = asyncio.Event()
        self._stats = ProductionStats(0.0, None)
        self._tasks: list[asyncio.Task] = []
        self._closed = False
        self._failed = False  # no more messages either way: the worker reported a failure, or is lost
        self._lost = False  # the worker (or its copy of the session) is gone: nothing to close there

    async def start(self) -> None:
        """The worker has already opened the session (`WorkerPool.open`): start both loops."""
        self._tasks = [asyncio.create_task(self._send_loop(), name=f"session-{self.session_id}-send"),
                       asyncio.create_task(self._take_loop(), name=f"session-{self.session_id}-take")]

    # ------------------------------------------------------------------ ProductionInput
    def _queue(self, kind: str, payload: Any) -> None:
        if self._closed or self._failed:
            return
        self._pending.append((kind, payload))
        self._has_input.set()

    def push_audio(self, chunk: AudioChunk) -> None:
        self.counters.bytes_to_workers += chunk.samples.nbytes
        self._queue("audio", chunk)

    def end_input(self, tails: tuple[AudioChunk, ...] = ()) -> None:
        self._queue("end_input", tuple(tails))

    def interrupt(self, msg: Interrupt) -> None:
        self._queue("interrupt", msg)

    def played(self, report: PlayoutReport) -> None:
        self._queue("played", report)

    def stats(self) -> ProductionStats:
        return self._stats

    async def close(self) -> None:
        """Stop both loops and close the session on the worker (best effort, bounded). Idempotent."""
        if self._closed:
            return
        self._closed = True
        current = asyncio.current_task()
        for t in self._tasks:
            if t is not current:
                t.cancel()
        await asyncio.gather(*(t for t in self._tasks if t is not current), return_exceptions=True)
        if not self._lost:
            try:
                await asyncio.wait_for(_await(self.handle.close_session.remote(self.session_id)), self._timeout)
            except Exception as exc:  # noqa: BLE001 - the worker expires the session on its own
                log.warning("session %s: close on worker %d failed: %s", self.session_id, self.worker_index, exc)
        self._on_end()

    # ------------------------------------------------------------------ the loops
    def _worker_lost(self, why: str) -> None:
        if self._failed or self._closed:
            return
        self._failed = self._lost = True
        log.warning("session %s: worker %d lost: %s", self.session_id, self.worker_index, why)
        self._output.production_failed(SessionError(
            "worker_lost", f"the worker running this session (worker {self.worker_index}) was lost: {why}"))

    async def _send_loop(self) -> None:
        while not self._failed:
            await self._has_input.wait()
            await asyncio.sleep(FEED_LINGER_S)
            self._has_input.clear()
            batch, self._pending = self._pending, []
            try:
                ok = await asyncio.wait_for(_await(self.handle.feed.remote(self.session_id, batch)), self._timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - dead, restarting, or too slow: the session is lost
                self._worker_lost(_short(exc))
                return
            self.counters.calls += 1
            if ok is None:
                self._worker_lost("the worker no longer has this session (it restarted)")
                return

    async def _take_loop(self) -> None:
        while not self._failed:
            try:
                reply = await asyncio.wait_for(_await(self.handle.take.remote(self.session_id, TAKE_WAIT_S, TAKE_LINGER_S)),
                                               self._timeout + TAKE_WAIT_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - see _send_loop
                self._worker_lost(_short(exc))
                return
            if reply is None:
                self._worker_lost("the worker no longer has this session (it restarted)")
                return
            messages, self._stats = reply
            self.counters.calls += 1
            for kind, payload in messages:
                self._deliver(kind, payload)

    def _deliver(self, kind: str, payload: Any) -> None:
        out = self._output
        if kind == "frame":
            frame: PendingFrame = payload
            self.counters.frames += 1
            self.counters.bytes_from_workers += frame.image.nbytes + frame.audio.nbytes
            out.frame_made(dataclasses.replace(frame, image=np.array(frame.image)))  # out of the object store
        elif kind == "idle_cut":
            out.idle_cut(payload)
        elif kind == "consumed":
            out.audio_consumed(payload)
        elif kind == "done":
            out.production_done()
        elif kind == "failed":
            code, message = payload
            self._failed = True
            out.production_failed(SessionError(code, message))


async def _await(ref: Any) -> Any:
    return await ref


def _short(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "no answer in time"
    text = str(exc).strip()
    return (text.splitlines()[0][:200] if text else type(exc).__name__)
