"""Builds the aiohttp application: routes, per-app state, and an explicit shutdown that closes every
connection of every transport and every session (and the engine when the app owns it)."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from streaming.engine import Engine

from . import webrtc, ws
from .avatar_routes import add_avatar_routes
from .avatars import AvatarStore
from .config import ServerConfig
from .context import CONTEXT, ServerContext
from .encode import JpegEncoder
from .errors import error_middleware, quiet_client_errors
from .ice import quiet_ice_logs
from .metrics import Metrics
from .routes import add_routes, default_static_dir
from .security import AccessPolicy, security_middleware
from .sessions import SessionManager
from .transports import Transport

log = logging.getLogger(__name__)

# The transports this server speaks: their routes, metrics labels and session counts come from here.
TRANSPORTS: tuple[Transport, ...] = (webrtc.TRANSPORT, ws.TRANSPORT)


def build_app(config: ServerConfig, engine: Engine, avatars: AvatarStore, owns_engine: bool = False) -> web.Application:
    """The whole server as a `web.Application`. With `owns_engine`, cleanup also stops the engine."""
    quiet_client_errors()
    quiet_ice_logs()
    metrics = Metrics(engine.generator.name, [t.name for t in TRANSPORTS])
    sessions = SessionManager(engine, metrics, config.max_sessions, config.max_sessions_per_client)
    metrics.bind(sessions.mean_fps, lambda: engine.worker.queue_depth)
    metrics.bind_quality(engine.quality_summary)
    ctx = ServerContext(config, engine, avatars, metrics, sessions, JpegEncoder(), AccessPolicy(config))
    app = web.Application(middlewares=[error_middleware, security_middleware],
                          client_max_size=config.max_upload_bytes + 1024 * 1024)
    app[CONTEXT] = ctx
    add_routes(app, config.static_dir if config.static_dir is not None else default_static_dir())
    add_avatar_routes(app)
    for transport in TRANSPORTS:
        transport.add_routes(app)

    async def on_shutdown(app: web.Application) -> None:
        ctx.stopping = True
        conns = list(ctx.connections)
        log.info("shutting down: closing %d connection(s)", len(conns))
        results = await asyncio.gather(*(c.shutdown() for c in conns), return_exceptions=True)
        for r in results:
            if isinstance(r, Exception):
                log.warning("error while closing a connection: %r", r)

    async def on_cleanup(app: web.Application) -> None:
        await engine.close_all()
        if owns_engine:
            await engine.shutdown()
        ctx.encoder.close()
        avatars.close()

    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app
