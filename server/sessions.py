"""Admission control over engine sessions, shared by every transport.

A slot is reserved before the (awaited) session start so two clients racing for the last slot
cannot both get in; `--max-sessions` counts all transports together (and `sessions{transport}` each
transport that reserves), and
`--max-sessions-per-client` caps what one client address may hold of them.
"""

from __future__ import annotations

import logging
from typing import Any

from streaming.engine import Engine
from streaming.generator import Avatar
from streaming.session import Session, SessionSettings

from .metrics import Metrics
from .ws_protocol import CLOSE_TOO_MANY

log = logging.getLogger(__name__)


class TooManySessions(RuntimeError):
    """Every session slot is taken; the client should retry later. How each transport refuses:"""

    http_status = 429
    close_code = CLOSE_TOO_MANY
    code = "too_many_sessions"
    retry_after_s: int | None = None


class SessionManager:
    def __init__(self, engine: Engine, metrics: Metrics, max_sessions: int, max_per_client: int | None = None) -> None:
        self.engine = engine
        self.metrics = metrics
        self.max_sessions = max_sessions
        self.max_per_client = max_per_client or max_sessions
        self._slots = 0
        self._by_transport: dict[str, int] = {}  # whatever transports reserve
        self._by_client: dict[str, int] = {}

    @property
    def active(self) -> int:
        return self._slots

    def held_by(self, client: str) -> int:
        return self._by_client.get(client, 0)

    def reserve(self, transport: str, client: str = "") -> None:
        """Take a slot for `client` (its address, or its token's name) or raise TooManySessions. Pair with
        `release()`."""
        if self._slots >= self.max_sessions:
            self.metrics.error("too_many_sessions")
            raise TooManySessions(
                f"the server is at its limit of {self.max_sessions} session(s); try again later "
                "(the operator can raise it with --max-sessions)"
            )
        if self.held_by(client) >= self.max_per_client:
            self.metrics.error("too_many_sessions")
            raise TooManySessions(
                f"you already hold {self.max_per_client} session(s) (per address, or per token when tokens are "
                "named), the limit per client; close one "
                "first (the operator can raise it with --max-sessions-per-client)"
            )
        self._slots += 1
        self._by_client[client] = self.held_by(client) + 1
        self._by_transport[transport] = self._by_transport.get(transport, 0) + 1
        self.metrics.sessions.labels(transport).set(self._by_transport[transport])

    def release(self, transport: str, client: str = "") -> None:
        self._slots = max(0, self._slots - 1)
        left = self.held_by(client) - 1
        if left > 0:
            self._by_client[client] = left
        else:
            self._by_client.pop(client, None)
        self._by_transport[transport] = max(0, self._by_transport.get(transport, 0) - 1)
        self.metrics.sessions.labels(transport).set(self._by_transport[transport])

    async def open(self, avatar: Avatar, speakers: int, transport: str, session_id: str | None = None,
                   generated_buffer_s: float | None = None) -> Session:
        """Start an engine session inside an already reserved slot; `generated_buffer_s`: a session of
        generated speech with that bound on its buffer (None: live speech)."""
        settings = SessionSettings(speakers=speakers) if generated_buffer_s is None else SessionSettings(
            speakers=speakers, generated_speech=True, max_buffer_s=generated_buffer_s)
        session = await self.engine.open_session(avatar, settings, session_id)
        self.metrics.sessions_opened.labels(transport).inc()
        return session

    async def finish(self, session: Session, reason: str) -> None:
        """Close a session and account for what it dropped."""
        await session.close(reason)
        if session.counters.dropped_frames:
            self.metrics.dropped.labels("engine").inc(session.counters.dropped_frames)

    def mean_fps(self) -> float:
        values = [f for s in self.engine.sessions.values() if (f := s.latency.fps()) is not None]
        return sum(values) / len(values) if values else 0.0

    def describe_backend(self) -> dict[str, Any]:
        g = self.engine.generator
        return {"backend": g.name, "backend_description": g.description}
