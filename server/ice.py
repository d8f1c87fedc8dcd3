"""STUN/TURN configuration for WebRTC across NATs: the server's own peer connections and the list the
browser page gets from `/api/info`.

TURN credentials: either static (`IceServer.username/credential`, given to every authorised
client), or minted per client from coturn's shared secret (`use-auth-secret` /
`static-auth-secret`): username `"<expiry unix time>:<client>"`, credential
`base64(HMAC-SHA1(secret, username))`, valid until the expiry only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import time
from typing import TYPE_CHECKING, Any

from .config import IceServer, ServerConfig

if TYPE_CHECKING:
    from aiortc import RTCConfiguration

_TAG = re.compile(r"[^A-Za-z0-9_.-]")
ICE_LOGGER = "aioice"


def quiet_ice_logs() -> None:
    """aioice logs every candidate pair of every call at INFO (dozens of lines per call) where an
    operator needs the server's own lines (connection state, session open and close). Unless aioice
    has a level of its own, or the log is at DEBUG (`--log-level debug` shows them), keep its
    warnings only."""
    ice_log = logging.getLogger(ICE_LOGGER)
    if ice_log.level == logging.NOTSET and not logging.getLogger().isEnabledFor(logging.DEBUG):
        ice_log.setLevel(logging.WARNING)


def is_turn(url: str) -> bool:
    return url.lower().startswith(("turn:", "turns:"))


def turn_credential(secret: str, client: str, ttl_s: int, now: float | None = None) -> tuple[str, str]:
    """(username, credential) for coturn's TURN REST API, valid for `ttl_s` seconds."""
    expiry = int((time.time() if now is None else now) + ttl_s)
    username = f"{expiry}:{_TAG.sub('_', client)[:48]}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def _with_credentials(server: IceServer, config: ServerConfig, client: str) -> tuple[str | None, str | None]:
    if not any(is_turn(u) for u in server.urls):
        return None, None
    if server.username is not None or config.turn_secret is None:
        return server.username, server.credential
    return turn_credential(config.turn_secret, client, config.turn_ttl_s)


def browser_ice_servers(config: ServerConfig, client: str) -> list[dict[str, Any]]:
    """The `iceServers` list for `new RTCPeerConnection({iceServers})` (only sent to authorised clients)."""
    out = []
    for server in config.ice_servers:
        entry: dict[str, Any] = {"urls": list(server.urls)}
        username, credential = _with_credentials(server, config, client)
        if username is not None:
            entry["username"] = username
            entry["credential"] = credential
        out.append(entry)
    return out


def rtc_configuration(config: ServerConfig) -> RTCConfiguration:
    """What the server's own peer connections use (no servers: host candidates only, fine on a LAN)."""
    from aiortc import RTCConfiguration, RTCIceServer  # here, so that render and bench need no WebRTC stack

    servers = []
    for server in config.ice_servers:
        username, credential = _with_credentials(server, config, "server")
        servers.append(RTCIceServer(urls=list(server.urls), username=username, credential=credential))
    return RTCConfiguration(iceServers=servers)


def parse_ice_url(text: str, username: str | None = None, credential: str | None = None) -> IceServer:
    """`--ice-server stun:host:3478` or `turn:host:3478?transport=udp` (credentials given separately)."""
    url = text.strip()
    if not re.match(r"^(stun|stuns|turn|turns):[^\s@]+$", url, re.IGNORECASE):
        raise ValueError(f"ICE server {url!r} is not a stun:, stuns:, turn: or turns: URL (e.g. turn:turn.example.org:3478); "
                         "give credentials with --turn-username/--turn-credential or --turn-secret, not in the URL")
    if is_turn(url):
        return IceServer((url,), username, credential)
    return IceServer((url,))
