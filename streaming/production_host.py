"""The model side of many sessions in one process, driven by plain messages: what a cluster worker runs.

A `ProductionHost` owns one generator (one model instance), its `GeneratorWorker` (so windows of
its sessions keep being batched together) and a `WindowProduction` per hosted session. The other
side of each session (the transport side, in a gateway) talks to it only with plain data, the
`streaming/link.py` messages, in batches:

    open(session_id, avatar, settings, peer_now)   -> (width, height); the session starts making windows
    feed(session_id, [(kind, payload), ...])        transport -> model, in the order they were sent
    take(session_id, wait_s)                        model -> transport: everything made since the last take
    close(session_id)

Nothing here knows how the messages travel (the Ray actor in `server/cluster/` carries them); it has
no network code, so it is tested in one process. Bounds: a session's outbox holds at most
`max_outbox` messages and a session whose other side has not taken anything for `lease_s` is closed
(its gateway is gone), so a lost gateway never leaks slots or memory here.

Clocks: arrival stamps come from the transport side's clock. `open` gets that clock's reading and
the host runs the session on it (its own monotonic clock minus the offset), so "how long has speech
waited" is right across hosts, to within the one-way delay of the open call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from .generator import Avatar, ClosingGenerator, Generator
from .link import IdleCut, ProductionStats
from .output import PendingFrame
from .production import WindowProduction
from .session_settings import SessionError, SessionSettings
from .worker import GeneratorWorker

log = logging.getLogger(__name__)

Message = tuple[str, Any]


class HostFull(RuntimeError):
    """Every slot of this host is taken (another gateway may have filled it)."""


class UnknownSession(KeyError):
    """No such session here (closed, expired, or the host restarted since it opened)."""


@dataclass
class Outbox:
    """`ProductionOutput` that queues messages for the next `take`. A session that stops taking its
    messages (gateway gone) overflows the bound and is failed instead of growing without limit."""

    limit: int
    messages: list[Message] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    overflowed: bool = False

    def _put(self, msg: Message) -> None:
        if len(self.messages) >= self.limit:
            self.overflowed = True
            return
        self.messages.append(msg)
        self.ready.set()

    def frame_made(self, frame: PendingFrame) -> None:
        self._put(("frame", frame))

    def idle_cut(self, cut: IdleCut) -> None:
        self._put(("idle_cut", cut))

    def audio_consumed(self, consumed: tuple[int, ...]) -> None:
        self._put(("consumed", tuple(consumed)))

    def production_done(self) -> None:
        self._put(("done", None))

    def production_failed(self, error: SessionError) -> None:
        self._put(("failed", (error.code, error.message)))  # plain data: exceptions need not unpickle

    def drain(self) -> list[Message]:
        out, self.messages = self.messages, []
        self.ready.clear()
        return out


@dataclass
class Hosted:
    production: WindowProduction
    outbox: Outbox
    last_take: float


class ProductionHost:
    """See the module docstring. Runs on one event loop (the actor's); the worker is its own thread."""

    def __init__(self, generator: Generator, capacity: int, max_batch: int | None = None,
                 lease_s: float = 15.0, max_outbox: int = 2000) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.generator = generator
        self.capacity = capacity
        self.lease_s = lease_s
        self.max_outbox = max_outbox
        self.worker = GeneratorWorker(generator, max_batch=max_batch)
        self.sessions: dict[str, Hosted] = {}
        self._opening = 0
        self.expired = 0  # sessions closed because their gateway stopped taking

    @property
    def load(self) -> int:
        return len(self.sessions) + self._opening

    async def open(self, session_id: str, avatar: Avatar, settings: SessionSettings,
                   peer_now: float) -> tuple[int, int]:
        """Start the model side of a session; its clock is the peer's. HostFull when no slot is free."""
        if self.load >= self.capacity:
            raise HostFull(f"all {self.capacity} slot(s) of this worker are taken")
        if session_id in self.sessions:
            raise ValueError(f"session id {session_id!r} already in use")
        offset = time.monotonic() - peer_now
        size = self.generator.output_size(avatar)
        outbox = Outbox(self.max_outbox)
        production = WindowProduction(session_id, self.generator, self.worker, avatar, settings, size, outbox,
                                      lambda: time.monotonic() - offset)
        self._opening += 1
        try:
            await production.start()
        finally:
            self._opening -= 1
        self.sessions[session_id] = Hosted(production, outbox, time.monotonic())
        return size

    def _get(self, session_id: str) -> Hosted:
        hosted = self.sessions.get(session_id)
        if hosted is None:
            raise UnknownSession(session_id)
        return hosted

    def feed(self, session_id: str, messages: list[Message]) -> None:
        """Transport -> model messages, applied in order."""
        p = self._get(session_id).production
        for kind, payload in messages:
            if kind == "audio":
                p.push_audio(payload)
            elif kind == "played":
                p.played(payload)
            elif kind == "interrupt":
                p.interrupt(payload)
            elif kind == "end_input":
                p.end_input(payload)
            else:
                raise ValueError(f"unknown message kind {kind!r}")

    async def take(self, session_id: str, wait_s: float, linger_s: float = 0.0) -> tuple[list[Message], ProductionStats]:
        """The messages made since the last take (waiting up to `wait_s` for one, then `linger_s` for the
        rest of a burst: the frames of a window come together, one take for them costs less), and stats."""
        hosted = self._get(session_id)
        hosted.last_take = time.monotonic()
        if not hosted.outbox.messages:
            try:
                await asyncio.wait_for(hosted.outbox.ready.wait(), wait_s)
            except asyncio.TimeoutError:
                pass
            else:
                if linger_s > 0:
                    await asyncio.sleep(linger_s)
        hosted.last_take = time.monotonic()
        messages = hosted.outbox.drain()
        if hosted.outbox.overflowed:
            messages.append(("failed", ("internal_error", "the gateway fell behind the worker")))
        return messages, hosted.production.stats()

    async def close(self, session_id: str) -> bool:
        """Close a hosted session; False when there was none (already closed or expired)."""
        hosted = self.sessions.pop(session_id, None)
        if hosted is None:
            return False
        await hosted.production.close()
        return True

    async def expire(self) -> int:
        """Close sessions whose other side has stopped taking (lease run out, or outbox overflowed)."""
        now = time.monotonic()
        stale = [sid for sid, h in self.sessions.items()
                 if now - h.last_take > self.lease_s or h.outbox.overflowed]
        for sid in stale:
            log.warning("session %s: its gateway stopped taking frames; closed", sid)
            await self.close(sid)
        self.expired += len(stale)
        return len(stale)

    def info(self) -> dict[str, Any]:
        w = self.worker.stats
        return {
            "sessions": len(self.sessions),
            "opening": self._opening,
            "capacity": self.capacity,
            "queue_depth": self.worker.queue_depth,
            "jobs_done": w.jobs_done,
            "busy_seconds": w.busy_seconds,
            "batches": w.batches,
            "batched_jobs": w.batched_jobs,
            "expired": self.expired,
            "window_s": _mean([h.production.compute.seconds for h in self.sessions.values()]),
            "realtime_factor": self.realtime_factor(),
        }

    def realtime_factor(self) -> float | None:
        """Seconds of video made per second the worker was busy (above 1: faster than real time; windows
        run together in a batch count once in the busy time). None before the first window."""
        w = self.worker.stats
        spec = self.generator.window
        return None if w.busy_seconds <= 0 else w.jobs_done * spec.new_frames / spec.fps / w.busy_seconds

    async def shutdown(self) -> None:
        for sid in list(self.sessions):
            await self.close(sid)
        if isinstance(self.generator, ClosingGenerator) and self.worker.alive:
            try:
                await asyncio.wrap_future(self.worker.call(self.generator.close))
            except Exception:  # noqa: BLE001 - shutdown goes on
                log.exception("backend %s: close failed", self.generator.name)
        await asyncio.get_running_loop().run_in_executor(None, self.worker.stop)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
