"""Server settings: one frozen dataclass built by the CLI (or a test) and read by every handler."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

PROTOCOL_VERSION = 1
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class IceServer:
    """A STUN or TURN server for WebRTC across NATs (aiortc `RTCIceServer`, the browser's iceServers).

    credential is never shown in reprs or logs. For TURN with coturn's `use-auth-secret`, leave
    username/credential empty and give the server `turn_secret`: each client gets its own
    short-lived credential (see docs/security.md).
    """

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ServerConfig:
    """Everything the network side needs to know; the engine and avatar store are passed separately.

    max_sessions: live sessions over both transports; one more gets 429 / close 4429.
    max_upload_bytes / max_upload_pixels: avatar upload limits (413 beyond them).
    hello_timeout_s: a websocket must send `hello` this soon after connecting (else 4408).
    ws_idle_timeout_s: a websocket client that sends nothing (audio or control) for this long is
        closed with 4408, so forgotten clients do not keep a generator busy with idle video.
    ws_send_queue_frames: frames queued per websocket before new ones are dropped (client reads slowly).
    ws_stall_timeout_s: a websocket whose client has not read anything for this long while frames
        are being dropped is closed with 4408.
    ws_close_linger_s: a websocket closed while its client was not reading (4408 client_not_reading)
        keeps its connection this long, so the client finds the `error` and the close frame after the
        frames it had not read when it reads again; then the connection is reset.
    stats_interval_s: period of the `stats` messages on both transports.
    ice_connect_timeout_s: a peer that is not connected this long after the answer is closed.
    ice_disconnect_grace_s: a peer that stays "disconnected" this long is closed.
    jpeg_quality: default websocket frame quality (a client may ask for another in `hello`).
    token: the access token; None = no authentication (only allowed on loopback: the CLI refuses
        other hosts without one). Never shown in reprs or logs.
    tokens: more access tokens, each with a name: (name, token). With any named token, each token is
        a client: `max_sessions_per_client` counts its sessions wherever they come from, and logs name
        it (never the token).
    allow_origins: browser origins (scheme://host[:port]) allowed besides the page's own; "*" = any.
    trusted_proxies: peer addresses whose X-Forwarded-For names the real client (a reverse proxy).
    max_sessions_per_client: live sessions per client address (429 / 4429 beyond).
    rate_limit_per_s / rate_limit_burst: token bucket per client address over the costly requests
        (POST /offer, websocket connects, avatar uploads): `burst` at once, then `per_s` a second.
    rtc_idle_timeout_s: a WebRTC session with no speech and no control message for this long is
        closed (`idle_timeout`), like an idle websocket.
    rtc_media_timeout_s: a connected peer whose microphone track sends nothing for this long is
        treated as gone (it vanished without a goodbye: no ICE consent for ~30 s otherwise).
    ice_servers: STUN/TURN servers for the server's peer and the browser page.
    turn_secret: coturn's static-auth-secret; TURN servers then get per-client credentials.
    turn_ttl_s: lifetime of those credentials.
    generated_buffer_s: sessions of generated speech (a TTS engine's, `input: "generated"`) buffer this
        much speech before audio is refused with `buffer_full` (live sessions: 10 s).
    """

    host: str = "127.0.0.1"
    port: int = 8080
    max_sessions: int = 8
    max_upload_bytes: int = 10 * 1024 * 1024
    max_upload_pixels: int = 40_000_000
    hello_timeout_s: float = 10.0
    ws_idle_timeout_s: float = 300.0
    ws_send_queue_frames: int = 25
    ws_stall_timeout_s: float = 5.0
    ws_max_message_bytes: int = 1024 * 1024 + 4
    ws_close_linger_s: float = 10.0
    stats_interval_s: float = 0.5
    ice_connect_timeout_s: float = 30.0
    ice_disconnect_grace_s: float = 10.0
    jpeg_quality: int = 80
    generated_buffer_s: float = 300.0
    static_dir: Path | None = None
    """Browser demo folder; None -> the installed `client_demo/static`."""
    token: str | None = field(default=None, repr=False)
    tokens: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    allow_origins: tuple[str, ...] = ()
    trusted_proxies: tuple[str, ...] = ()
    max_sessions_per_client: int = 4
    rate_limit_per_s: float = 1.0
    rate_limit_burst: int = 20
    rtc_idle_timeout_s: float = 300.0
    rtc_media_timeout_s: float = 10.0
    ice_servers: tuple[IceServer, ...] = ()
    turn_secret: str | None = field(default=None, repr=False)
    turn_ttl_s: int = 24 * 3600

    def __post_init__(self) -> None:
        if self.max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {self.max_sessions}")
        if self.max_upload_bytes < 1024:
            raise ValueError("max_upload_bytes must be >= 1024")
        if self.max_upload_pixels < 64 * 64:
            raise ValueError("max_upload_pixels must be >= 4096")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be 1..100, got {self.jpeg_quality}")
        if (self.ws_send_queue_frames < 1 or self.ws_stall_timeout_s <= 0 or self.stats_interval_s <= 0
                or self.ws_close_linger_s <= 0):
            raise ValueError("ws_send_queue_frames, ws_stall_timeout_s, ws_close_linger_s and stats_interval_s "
                             "must be positive")
        if any(len(t) < 8 for t in ([self.token] if self.token else []) + [t for _, t in self.tokens]):
            raise ValueError("an access token must be at least 8 characters (e.g. secrets.token_urlsafe(32))")
        names = [n for n, _ in self.tokens]
        if any(not n for n in names) or len(set(names)) != len(names):
            raise ValueError(f"token names must be unique and not empty, got {names}")
        if self.max_sessions_per_client < 1 or self.rate_limit_burst < 1 or self.rate_limit_per_s <= 0:
            raise ValueError("max_sessions_per_client, rate_limit_burst and rate_limit_per_s must be positive")
        if self.rtc_idle_timeout_s <= 0 or self.rtc_media_timeout_s <= 0 or self.ws_idle_timeout_s <= 0:
            raise ValueError("idle and media timeouts must be positive")
