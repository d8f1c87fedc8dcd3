"""The real server app on 127.0.0.1:<free port>, in this test's event loop, for the client tests."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from server.app import build_app
from server.avatars import AvatarStore
from server.config import ServerConfig
from streaming.engine import Engine

from ..helpers.demo_server import RunningServer, free_port, make_backend

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts"










@contextlib.asynccontextmanager
async def running_server(upload_dir: Path) -> AsyncIterator[RunningServer]:
    generator, builtins, default = make_backend()
    engine = Engine(generator)
    store = AvatarStore(builtins, upload_dir, default)
    app = build_app(ServerConfig(port=0), engine, store, owns_engine=True)
    runner = web.AppRunner(app, shutdown_timeout=5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "/api/info") as r:
                info = await r.json()
            async with http.get(url + "/api/avatars") as r:
                avatars = await r.json()
        yield RunningServer(url, info, avatars, engine)
    finally:
        await runner.cleanup()
        # Leaked asyncio futures with unretrieved exceptions log a traceback when garbage-collected;
        # collect now, inside the test, rather than at a random later moment: on CPython 3.11 a
        # collection during pytest's own ast.parse whose finalizer formats a traceback (which calls
        # ast.parse again) fails the run with "AST constructor recursion depth mismatch".
        gc.collect()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with running_server(tmp_path / "avatars") as s:
        yield s


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
