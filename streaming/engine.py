"""The engine: one generator worker shared by every session, and the registry of live sessions."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .generator import Avatar, ClosingGenerator, Generator
from .session import Session, SessionSettings, SessionState
from .worker import GeneratorWorker

log = logging.getLogger(__name__)


class Engine:
    """Owns the worker thread (and through it the generator) and the sessions it serves."""

    def __init__(self, generator: Generator, max_batch: int | None = None) -> None:
        """max_batch: most sessions' windows run together (default: the backend's; 1 = never batch)."""
        self.generator = generator
        self.worker = GeneratorWorker(generator, max_batch=max_batch)
        self.sessions: dict[str, Session] = {}
        log.info("engine started with backend %s: %s", generator.name, generator.description)

    async def open_session(
        self, avatar: Avatar, settings: SessionSettings | None = None, session_id: str | None = None
    ) -> Session:
        """Create and start a session; it removes itself from the registry when closed."""
        session = Session(self.generator, self.worker, avatar, settings, session_id)
        if session.id in self.sessions:
            raise ValueError(f"session id {session.id!r} already in use")
        self.sessions[session.id] = session

        def forget(state: SessionState) -> None:
            if state == SessionState.CLOSED:
                self.sessions.pop(session.id, None)

        session.add_state_listener(forget)
        try:
            await session.start()
        except Exception:
            self.sessions.pop(session.id, None)
            raise
        return session

    async def close_all(self, reason: str = "server shutting down") -> None:
        await asyncio.gather(*(s.close(reason) for s in list(self.sessions.values())), return_exceptions=True)

    async def shutdown(self) -> None:
        """Close every session, let the backend release what it holds (on the worker thread, where it
        ran), then stop the worker thread."""
        await self.close_all()
        if isinstance(self.generator, ClosingGenerator) and self.worker.alive:
            try:
                await asyncio.wrap_future(self.worker.call(self.generator.close))
            except Exception:  # noqa: BLE001 - shutdown goes on
                log.exception("backend %s: close failed", self.generator.name)
        await asyncio.get_running_loop().run_in_executor(None, self.worker.stop)

    def stats(self) -> dict[str, Any]:
        w = self.worker.stats
        return {
            "backend": self.generator.name,
            "sessions": len(self.sessions),
            "worker_queue_depth": self.worker.queue_depth,
            "worker_jobs_done": w.jobs_done,
            "worker_jobs_failed": w.jobs_failed,
            "worker_jobs_cancelled": w.jobs_cancelled,
            "worker_busy_seconds": w.busy_seconds,
            "worker_max_batch": self.worker.max_batch,
            "worker_batches": w.batches,
            "worker_batched_jobs": w.batched_jobs,
            "quality": self.quality_summary(),
        }

    def quality_summary(self) -> dict[str, Any]:
        """Adaptive quality over live sessions: how many run below full quality, their lowest steps."""
        levels = [s.quality.level for s in self.sessions.values() if s.quality is not None]
        reduced = [lv for lv in levels if lv.reduced]
        return {
            "sessions_adaptive": len(levels),
            "sessions_reduced": len(reduced),
            "min_steps": min((lv.steps for lv in levels), default=None),
            "changes": sum(s.quality.changes for s in self.sessions.values() if s.quality is not None),
        }
