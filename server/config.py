"""Server settings: one frozen dataclass built by the CLI (or a test) and read by every handler."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROTOCOL_VERSION = 1


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
    stats_interval_s: period of the `stats` messages on both transports.
    ice_connect_timeout_s: a peer that is not connected this long after the answer is closed.
    ice_disconnect_grace_s: a peer that stays "disconnected" this long is closed.
    jpeg_quality: default websocket frame quality (a client may ask for another in `hello`).
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
    stats_interval_s: float = 0.5
    ice_connect_timeout_s: float = 30.0
    ice_disconnect_grace_s: float = 10.0
    jpeg_quality: int = 80
    static_dir: Path | None = None
    """Browser demo folder; None -> the installed `client_demo/static`."""

    def __post_init__(self) -> None:
        if self.max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {self.max_sessions}")
        if self.max_upload_bytes < 1024:
            raise ValueError("max_upload_bytes must be >= 1024")
        if self.max_upload_pixels < 64 * 64:
            raise ValueError("max_upload_pixels must be >= 4096")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be 1..100, got {self.jpeg_quality}")
        if self.ws_send_queue_frames < 1 or self.ws_stall_timeout_s <= 0 or self.stats_interval_s <= 0:
            raise ValueError("ws_send_queue_frames, ws_stall_timeout_s and stats_interval_s must be positive")
