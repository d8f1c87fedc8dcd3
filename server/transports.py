"""What a transport declares about itself. Everything shared (session counts, metrics labels, the
`ready` message, the app's routes) reads this declaration, never a transport's name.

The transports a server speaks are listed once, in `server/app.py` (`TRANSPORTS`); docs/server.md
says how to add one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web


@dataclass(frozen=True)
class Transport:
    """name: the `transport` label of the metrics, the key of the session counts, the log lines' word.
    frames_in_band: frames (JPEG + the PCM they were made from) travel in this transport's own
        messages (docs/protocol.md), so `ready` carries the protocol version and the audio layout
        the client needs to unpack them; False when media tracks carry them (WebRTC).
    add_routes: adds the transport's HTTP route(s) to the app.
    """

    name: str
    frames_in_band: bool
    add_routes: Callable[[web.Application], None]
