"""The launch endpoint of the LiveKit avatar worker: `POST /launch {room_name, url, token}` starts one.

The pattern of LiveKit's own avatar examples: the agent's `AvatarSession` (`livekit_plugin.py`) mints
a token for the avatar participant and posts it here; this service starts an avatar worker
(`run_avatar_worker`) that joins that room and drives this project's server. Answers `202
{"room_name", "workers"}`; `400` for a body that is not that JSON; `429` when `--max-workers` are
running. One process can serve many rooms (one worker task and one server session each).

    python -m client_demo.agents.livekit_launcher --server ws://127.0.0.1:8080/ws [--port 8089] [--avatar NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

WorkerFactory = Callable[[str, str, str], Awaitable[None]]  # (livekit url, token, room name)
WORKERS = web.AppKey("workers", dict)
FIELDS = ("room_name", "url", "token")


def launch_request(body: Any) -> tuple[str, str, str]:
    """`{room_name, url, token}` -> the three strings, or `web.HTTPBadRequest` saying what is wrong."""
    if not isinstance(body, dict):
        raise _bad('the body must be a JSON object {"room_name", "url", "token"}')
    values = []
    for name in FIELDS:
        value = body.get(name)
        if not isinstance(value, str) or not value.strip():
            raise _bad(f'"{name}" must be a non-empty string')
        values.append(value)
    if not values[1].startswith(("ws://", "wss://", "http://", "https://")):
        raise _bad('"url" must be the LiveKit server URL (wss://...)')
    return values[0], values[1], values[2]


def _bad(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": {"code": "bad_request", "message": message}}),
                              content_type="application/json")


def build_launcher(start_worker: WorkerFactory, max_workers: int = 8) -> web.Application:
    """The launch app; `start_worker(url, token, room_name)` runs one avatar worker until its room ends."""
    app = web.Application(client_max_size=64 * 1024)
    app[WORKERS] = {}

    async def launch(request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.text())
        except ValueError as exc:
            raise _bad(f"the body is not JSON: {exc}") from exc
        room, url, token = launch_request(body)
        workers: dict[str, asyncio.Task] = request.app[WORKERS]
        if len(workers) >= max_workers:
            raise web.HTTPTooManyRequests(text=json.dumps({"error": {"code": "too_many_sessions",
                                                                     "message": f"{max_workers} workers running"}}),
                                          content_type="application/json")
        key = f"{room}#{len(workers)}-{id(body)}"
        task = asyncio.create_task(_run(start_worker, url, token, room), name=f"avatar-{room}")
        workers[key] = task
        task.add_done_callback(lambda _: workers.pop(key, None))
        log.info("avatar worker started for room %s", room)
        return web.json_response({"room_name": room, "workers": len(workers)}, status=202)

    async def stop_workers(app: web.Application) -> None:
        tasks = list(app[WORKERS].values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    app.router.add_post("/launch", launch)
    app.on_shutdown.append(stop_workers)
    return app


async def _run(start_worker: WorkerFactory, url: str, token: str, room: str) -> None:
    try:
        await start_worker(url, token, room)
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - one room's failure must not touch the others
        log.exception("avatar worker for room %s failed", room)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Launch endpoint of the LiveKit avatar worker (docs/agents.md).")
    p.add_argument("--server", required=True, help="this project's websocket, ws://HOST:PORT/ws")
    p.add_argument("--avatar", default=None, help="avatar name on the server (default: the server's default)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8089)
    p.add_argument("--max-workers", type=int, default=8)
    args = p.parse_args(argv)
    from .livekit_avatar import run_avatar_worker  # the agents extra, only when serving

    async def start_worker(url: str, token: str, room: str) -> None:
        await run_avatar_worker(url, token, args.server, args.avatar)

    logging.basicConfig(level=logging.INFO)
    web.run_app(build_launcher(start_worker, args.max_workers), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
