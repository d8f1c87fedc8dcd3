"""Per-app state shared by the handlers (no module-level globals): stored under `CONTEXT` in the app."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from model.timebase import SAMPLE_RATE
from streaming.engine import Engine

from .avatars import AvatarStore
from .config import PROTOCOL_VERSION, ServerConfig
from .encode import JpegEncoder
from .metrics import Metrics
from .sessions import SessionManager

if TYPE_CHECKING:
    from .connection import Connection
    from .security import AccessPolicy


@dataclass
class ServerContext:
    config: ServerConfig
    engine: Engine
    avatars: AvatarStore
    metrics: Metrics
    sessions: SessionManager
    encoder: JpegEncoder
    security: AccessPolicy
    connections: set[Connection] = field(default_factory=set)  # live connections of every transport
    stopping: bool = False

    def info(self, authorized: bool, client: str) -> dict[str, Any]:
        """`/api/info`; the STUN/TURN list (it may carry TURN credentials) only for authorised clients."""
        from .ice import browser_ice_servers

        g = self.engine.generator
        return {
            "backend": g.name,
            "backend_description": g.description,
            "fps": g.window.fps,
            "sample_rate": SAMPLE_RATE,
            "samples_per_frame": g.window.samples_per_frame,
            "window_frames": g.window.new_frames,
            "protocol_version": PROTOCOL_VERSION,
            "max_upload_bytes": self.config.max_upload_bytes,
            "auth_required": self.security.auth_required,
            "ice_servers": browser_ice_servers(self.config, client) if authorized else [],
        }


CONTEXT: web.AppKey[ServerContext] = web.AppKey("infinitetalk_context", ServerContext)


def context_of(request: web.Request) -> ServerContext:
    return request.app[CONTEXT]
