"""`GET /api/cluster`: the workers, as the gateway sees them (authenticated like the rest of the API)."""

from __future__ import annotations

from aiohttp import web

from ..context import context_of


async def api_cluster(request: web.Request) -> web.Response:
    """{"workers": [{"id", "node", "pid", "gpus", "sessions", "capacity", "alive", ...}]}, asked afresh
    of every worker (each within the RPC timeout)."""
    pool = context_of(request).engine.pool
    await pool.refresh()
    return web.json_response(pool.describe())


def add_cluster_routes(app: web.Application) -> None:
    app.router.add_get("/api/cluster", api_cluster)
