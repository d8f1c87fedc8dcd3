"""Test helpers for the server tests: a JPEG-robust fingerprint backend and a live server on loopback."""

from __future__ import annotations

import contextlib
import socket
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from aiohttp import web

from server.app import build_app
from server.avatars import AvatarStore, UploadLimits
from server.config import ServerConfig
from server.context import CONTEXT, ServerContext
from streaming.engine import Engine
from streaming.generator import Avatar, Generator

from .pattern_backend import PatternGenerator, audio_code

BLOCK = 16


class BlockPatternGenerator(PatternGenerator):
    """The pattern backend with its fingerprints painted as flat grey 16x16 blocks, so they survive JPEG.

    block 0: the frame's audio code (see `audio_code`); block 1: 255 for speech windows, else 0.
    noise: fill the rest with random pixels (large JPEGs, to fill socket buffers).
    """

    def __init__(self, noise: bool = False, **kw) -> None:
        kw.setdefault("size", (64, 48))
        super().__init__(**kw)
        self.noise = noise
        self._rng = np.random.default_rng(0)

    def generate(self, state, job):
        w, h = self.size
        for img in super().generate(state, job):
            if self.noise:
                out = self._rng.integers(0, 256, (h, w, 3), np.uint8)
            else:
                out = np.zeros((h, w, 3), np.uint8)
            out[:BLOCK, :BLOCK] = img[1, 0, 0]
            out[:BLOCK, BLOCK : 2 * BLOCK] = img[0, 0, 2]
            yield out


def image_code(rgb: np.ndarray) -> int:
    return int(np.round(rgb[2:BLOCK - 2, 2:BLOCK - 2].mean()))


def make_avatar(name: str = "test", size: tuple[int, int] = (64, 48)) -> Avatar:
    w, h = size
    img = np.full((1, h, w, 3), 128, np.uint8)
    img[0, h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = (200, 150, 120)
    return Avatar(name, img)


def read_wav(path: Path) -> np.ndarray:
    """16 kHz mono PCM16 WAV -> int16 samples."""
    with wave.open(str(path)) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        return np.frombuffer(w.readframes(w.getnframes()), np.int16).copy()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    url: str
    ctx: ServerContext
    runner: web.AppRunner

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"


@contextlib.asynccontextmanager
async def live_server(
    generator: Generator | None = None,
    upload_dir: Path | None = None,
    builtins: dict | None = None,
    access_log: bool = True,
    **config: object,
) -> AsyncIterator[LiveServer]:
    """The real app on 127.0.0.1:<free port>; built-ins default to two synthetic avatars ("test" first).
    access_log=False runs it like the CLI does (no access log)."""
    generator = generator or BlockPatternGenerator()
    engine = Engine(generator)
    if builtins is None:
        builtins = {"test": lambda: make_avatar("test"), "other": lambda: make_avatar("other", (48, 64))}
    store = AvatarStore(builtins, upload_dir, next(iter(builtins)), UploadLimits(
        max_bytes=int(config.get("max_upload_bytes", 10 * 1024 * 1024)),
        max_pixels=int(config.get("max_upload_pixels", 40_000_000)),
    ))
    cfg = replace(ServerConfig(port=0), **config)
    app = build_app(cfg, engine, store, owns_engine=True)
    runner = web.AppRunner(app, shutdown_timeout=5, **({} if access_log else {"access_log": None}))
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", app[CONTEXT], runner)
    finally:
        await runner.cleanup()


__all__ = ["BlockPatternGenerator", "LiveServer", "audio_code", "image_code", "live_server", "make_avatar", "read_wav"]


@dataclass
class WsLog:
    """Everything a websocket client received, in order: ('json', dict) or ('frame', FrameMessage, t)."""

    items: list
    close_code: int | None = None

    @property
    def frames(self) -> list:
        return [i[1] for i in self.items if i[0] == "frame"]

    @property
    def frame_times(self) -> list[float]:
        return [i[2] for i in self.items if i[0] == "frame"]

    def json(self, kind: str | None = None) -> list[dict]:
        return [i[1] for i in self.items if i[0] == "json" and (kind is None or i[1].get("type") == kind)]


async def ws_receive_all(ws, log: WsLog, loop_time) -> None:
    """Collect messages until the socket closes."""
    import json as _json

    from aiohttp import WSMsgType

    from server.ws_protocol import unpack_frame

    while True:
        msg = await ws.receive()
        if msg.type == WSMsgType.BINARY:
            log.items.append(("frame", unpack_frame(msg.data), loop_time()))
        elif msg.type == WSMsgType.TEXT:
            log.items.append(("json", _json.loads(msg.data), loop_time()))
        elif msg.type == WSMsgType.CLOSE:
            log.close_code = msg.data  # what the server sent in its close frame
            return
        elif msg.type in (WSMsgType.CLOSED, WSMsgType.ERROR, WSMsgType.CLOSING):
            return


async def ws_send_realtime(ws, pcm: np.ndarray, chunk: int = 320, rate: int = 16000, speaker: int = 0) -> None:
    """Send int16 PCM in 20 ms binary audio messages paced by the wall clock."""
    import asyncio

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    header = bytes([0x41, 1, speaker, 0])
    for i in range(0, pcm.size, chunk):
        await asyncio.sleep(max(0.0, t0 + i / rate - loop.time()))
        await ws.send_bytes(header + pcm[i : i + chunk].tobytes())
