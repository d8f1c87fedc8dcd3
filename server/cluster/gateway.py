"""Starting the gateway: the cluster's workers, then the same aiohttp app as the single-process server."""

from __future__ import annotations

import argparse
import logging

from aiohttp import web

from ..app import build_app
from ..avatars import AvatarStore
from ..config import ServerConfig
from ..context import CONTEXT
from .admission import ClusterSessionManager
from .engine import ClusterEngine
from .metrics import WorkerCollector
from .options import ClusterOptions
from .pool import WorkerPool
from .routes import add_cluster_routes

log = logging.getLogger(__name__)


async def start_cluster_engine(options: ClusterOptions, backend_args: argparse.Namespace,
                               start_timeout_s: float = 300.0, lease_s: float = 15.0) -> ClusterEngine:
    """Start or join Ray and bring the workers up. ClusterUnavailable (one line) when it cannot.
    lease_s: workers this gateway creates close a session nobody took frames from for this long."""
    pool = WorkerPool(options, backend_args, start_timeout_s, lease_s)
    try:
        await pool.start()
    except BaseException:
        await pool.stop()
        raise
    return ClusterEngine(pool)


def build_cluster_app(config: ServerConfig, engine: ClusterEngine, avatars: AvatarStore,
                      owns_engine: bool = False) -> web.Application:
    """The server's app over a cluster: admission also bounded by the workers' free slots, plus `/api/cluster`."""
    app = build_app(config, engine, avatars, owns_engine=owns_engine)  # type: ignore[arg-type]
    ctx = app[CONTEXT]
    sessions = ClusterSessionManager(engine, ctx.metrics, config.max_sessions,  # type: ignore[arg-type]
                                     config.max_sessions_per_client)
    sessions.pool = engine.pool
    ctx.sessions = sessions
    ctx.metrics.registry.register(WorkerCollector(engine.pool, engine.link))
    add_cluster_routes(app)
    return app
