"""Plain HTTP routes: the demo page, info, health and metrics."""

from __future__ import annotations

import importlib.resources
import logging
from pathlib import Path

from aiohttp import web

from .context import CONTEXT, context_of
from .errors import ApiError

log = logging.getLogger(__name__)

PLACEHOLDER_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>infinitetalk-live</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>infinitetalk-live</h1>
<p>The server is running, but the browser demo page is missing: <code>{path}</code> was not found.
Reinstall the package (the page ships in <code>client_demo/static/</code>), or talk to the server
directly: WebRTC via <code>POST /offer</code>, websocket via <code>/ws</code> (see docs/protocol.md).</p>
<p>Backend: <b>{backend}</b>. <a href="/api/info">/api/info</a> &middot; <a href="/healthz">/healthz</a>
&middot; <a href="/metrics">/metrics</a></p>
</body></html>
"""


def default_static_dir() -> Path:
    """`client_demo/static` wherever the package is installed (a source checkout or site-packages)."""
    return Path(str(importlib.resources.files("client_demo") / "static"))


async def index(request: web.Request) -> web.StreamResponse:
    ctx = context_of(request)
    page = static_dir_of(request.app) / "index.html"
    if page.is_file():
        return web.FileResponse(page, headers={"Cache-Control": "no-cache"})
    html = PLACEHOLDER_PAGE.format(path=page, backend=ctx.engine.generator.description)
    return web.Response(text=html, content_type="text/html")


def static_dir_of(app: web.Application) -> Path:
    config = app[CONTEXT].config
    return config.static_dir if config.static_dir is not None else default_static_dir()


async def missing_static(request: web.Request) -> web.StreamResponse:
    raise ApiError(404, "not_found", f"no static file {request.match_info.get('tail', '')!r}: the demo page is not installed")


async def api_info(request: web.Request) -> web.Response:
    ctx = context_of(request)
    return web.json_response(ctx.info(ctx.security.authorized(request), ctx.security.client(request)))


async def healthz(request: web.Request) -> web.Response:
    ctx = context_of(request)
    if ctx.stopping:
        return web.json_response({"status": "stopping"}, status=503)
    return web.json_response({"status": "ok", "backend": ctx.engine.generator.name,
                              "sessions": len(ctx.engine.sessions)})


async def metrics(request: web.Request) -> web.Response:
    m = context_of(request).metrics
    return web.Response(body=m.render(), headers={"Content-Type": m.content_type})


def add_routes(app: web.Application, static_dir: Path) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/api/info", api_info)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    if static_dir.is_dir():
        app.router.add_static("/static/", static_dir, follow_symlinks=False)
    else:
        log.warning("demo page folder %s not found; / serves a placeholder", static_dir)
        app.router.add_get("/static/{tail:.*}", missing_static)
