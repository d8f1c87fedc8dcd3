"""A server for the client and browser tests, in a thread of its own, on a free loopback port."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

import numpy as np

from server.cli import builtin_avatars
from streaming.backends import create_generator
from streaming.engine import Engine
from streaming.generator import Avatar, Generator


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
