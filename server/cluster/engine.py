"""`ClusterEngine`: what the server's handlers use of `streaming.engine.Engine`, with sessions on workers.

Each session is a `streaming.session.Session` whose transport side (intake, pacer, state) runs here
and whose model side is a `RemoteProduction` talking to the worker the pool placed it on, so the
transports, the browser page and the clients see exactly the single-process server.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from streaming.generator import Avatar, WindowSpec
from streaming.session import Session, SessionSettings, SessionState

from .pool import WorkerPool, WorkerSlot
from .remote_production import LinkCounters, RemoteProduction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteBackend:
    """The workers' backend as the gateway knows it: what `Session` and `/api/info` read of a generator."""

    name: str
    description: str
    window: WindowSpec
    size: tuple[int, int] = (0, 0)

    def output_size(self, avatar: Avatar) -> tuple[int, int]:
        """The frame size the worker reported when it opened the session."""
        return self.size


class ClusterSession(Session):
    """A session whose model side runs on worker `worker_id`; its stats say which."""

    worker_id: int

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "worker": self.worker_id}


class _QueueDepth:
    """`engine.worker.queue_depth` for the metrics: windows queued over all live workers."""

    def __init__(self, pool: WorkerPool) -> None:
        self._pool = pool

    @property
    def queue_depth(self) -> int:
        return sum(int(w.info.get("queue_depth", 0)) for w in self._pool.workers if w.alive)


class ClusterEngine:
    """See the module docstring."""

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool
        b = pool.backend
        self.generator = RemoteBackend(b["name"], f"{b['description']} (cluster: {len(pool.workers)} worker(s))",
                                       b["window"])
        self.worker = _QueueDepth(pool)
        self.sessions: dict[str, Session] = {}
        self.link = LinkCounters()

    async def open_session(self, avatar: Avatar, settings: SessionSettings | None = None,
                           session_id: str | None = None) -> Session:
        """Place the session's model side on a worker, then start its transport side here.
        ClusterFull when no worker has a free slot; SessionError when the worker could not start it."""
        settings = settings or SessionSettings()
        sid = session_id or uuid.uuid4().hex[:12]
        if sid in self.sessions:
            raise ValueError(f"session id {sid!r} already in use")
        slot, size = await self.pool.open(sid, avatar, settings, time.monotonic())
        backend = RemoteBackend(self.generator.name, self.generator.description, self.generator.window, size)

        def production(output) -> RemoteProduction:
            return RemoteProduction(slot.handle, slot.index, sid, output, self.pool.options.rpc_timeout_s,
                                    lambda: self.pool.forget(slot, sid), self.link)

        session = ClusterSession(backend, None, avatar, settings, sid, production=production)
        session.worker_id = slot.index
        self.sessions[sid] = session
        session.add_state_listener(self._forget_when_closed(session))
        try:
            await session.start()
        except Exception:
            self.sessions.pop(sid, None)
            await self._abandon(slot, sid, session)
            raise
        return session

    def _forget_when_closed(self, session: Session):
        def forget(state: SessionState) -> None:
            if state == SessionState.CLOSED:
                self.sessions.pop(session.id, None)
        return forget

    async def _abandon(self, slot: WorkerSlot, sid: str, session: Session) -> None:
        await session.production.close()
        self.pool.forget(slot, sid)

    async def close_all(self, reason: str = "server shutting down") -> None:
        await asyncio.gather(*(s.close(reason) for s in list(self.sessions.values())), return_exceptions=True)

    async def shutdown(self) -> None:
        await self.close_all()
        await self.pool.stop()

    def quality_summary(self) -> dict[str, Any]:
        """Adaptive quality runs on the workers; the gateway reports the levels its sessions' stats carry."""
        levels = [q for s in self.sessions.values() if (q := s.production.stats().quality)]
        reduced = [q for q in levels if q.get("reduced")]
        return {"sessions_adaptive": len(levels), "sessions_reduced": len(reduced),
                "min_steps": min((q["steps"] for q in levels if "steps" in q), default=None),
                "changes": sum(int(q.get("changes", 0)) for q in levels)}
