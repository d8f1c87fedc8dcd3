"""The real server app on 127.0.0.1:<free port>, in this test's event loop, for the client tests."""

from __future__ import annotations

import contextlib
import gc
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from server.app import build_app
from server.avatars import AvatarStore
from server.cli import builtin_avatars
from server.config import ServerConfig
from streaming.backends import create_generator
from streaming.engine import Engine
from streaming.generator import Avatar, Generator

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts"


def _synthetic_avatar(name: str, size: tuple[int, int]) -> Avatar:
    w, h = size
    img = np.full((1, h, w, 3), 90, np.uint8)
    img[0, h // 5 : 4 * h // 5, w // 4 : 3 * w // 4] = (210, 170, 140)
    return Avatar(name, img)


def make_backend() -> tuple[Generator, dict[str, Any], str]:
    """(generator, built-in avatar loaders, default avatar name): what `infinitetalk-live serve`
    uses by default (the CPU backend `lite`, the shipped portrait), plus a plain synthetic avatar so
    the tests have a second one to switch to."""
    builtins, default = builtin_avatars()
    builtins = {**builtins, "plain": lambda: _synthetic_avatar("plain", (160, 120))}
    # 320x320 instead of the default 512 keeps VP8 encode + decode (both ends run in this process)
    # affordable on a loaded 2-core CI machine.
    return create_generator("lite", width=320, height=320), builtins, default


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningServer:
    url: str
    info: dict[str, Any]
    avatars: dict[str, Any]
    engine: Engine


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
