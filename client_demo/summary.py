"""What a client run was asked to do and what it saw; shared by the websocket and WebRTC clients."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit


@dataclass(frozen=True)
class RunOptions:
    """url: the server's base http(s) URL. seconds: stop sending after this much audio.
    interrupt_after: send an interrupt after this many seconds of audio (and stop sending).
    tail_s: how long to keep receiving after the speech came back (idle frames end the file).
    timeout_s: give up waiting for the speech to come back after this long past the last audio.
    """

    url: str = "http://127.0.0.1:8080"
    avatar: str | None = None
    token: str | None = None
    speaker_id: int = 0
    speakers: int = 1
    seconds: float | None = None
    interrupt_after: float | None = None
    fast: bool = False
    tail_s: float = 0.5
    timeout_s: float = 20.0
    jpeg_quality: int = 80

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def http_url(self, path: str) -> str:
        return self.url.rstrip("/") + path

    def ws_url(self) -> str:
        """ws(s)://host/ws, with `?token=` when a token is set (browsers cannot send headers on websockets)."""
        parts = urlsplit(self.url.rstrip("/"))
        scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
        if scheme is None:
            raise ValueError(f"--url must start with http:// or https://, got {self.url!r}")
        path = parts.path if parts.path.endswith("/ws") else parts.path + "/ws"
        query = urlencode({"token": self.token}) if self.token else ""
        return urlunsplit((scheme, parts.netloc, path, query, ""))


@dataclass
class RunSummary:
    """Counters of one run; `fps` is frames received per second of receiving."""

    transport: str
    backend: str = ""
    backend_description: str = ""
    session_id: str = ""
    width: int = 0
    height: int = 0
    frames: int = 0
    speech_frames: int = 0
    filler_frames: int = 0
    missing_frames: int = 0  # frame indices the server skipped (websocket: dropped for a slow reader)
    padded_frames: int = 0  # speech frames without a latency: the window was flushed early, padded with silence
    audio_samples: int = 0
    audio_rate: int = 0
    audio_sent_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    states: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    first_frame_at: float | None = None
    last_frame_at: float | None = None
    interrupted: bool = False

    def frame_received(self) -> None:
        now = time.monotonic()
        if self.first_frame_at is None:
            self.first_frame_at = now
        self.last_frame_at = now
        self.frames += 1

    def add_state(self, state: str) -> None:
        if not self.states or self.states[-1] != state:
            self.states.append(state)

    def idle_after_interrupt(self, mark: int) -> bool:
        """True once the states since index `mark` went through "interrupted" and then "idle"."""
        later = self.states[mark:]
        return "interrupted" in later and "idle" in later[later.index("interrupted") + 1 :]

    @property
    def fps(self) -> float:
        if self.frames < 2 or self.first_frame_at is None or self.last_frame_at is None:
            return 0.0
        span = self.last_frame_at - self.first_frame_at
        return (self.frames - 1) / span if span > 0 else 0.0

    @property
    def mean_latency_s(self) -> float:
        return sum(self.latencies) / len(self.latencies) if self.latencies else math.nan

    def as_dict(self) -> dict[str, Any]:
        return {
            "transport": self.transport,
            "backend": self.backend,
            "session_id": self.session_id,
            "size": [self.width, self.height],
            "frames": self.frames,
            # Only the websocket protocol flags each frame; over WebRTC fillers come from the stats.
            "speech_frames": self.speech_frames if self.transport == "ws" else None,
            "filler_frames": self.filler_frames,
            "missing_frames": self.missing_frames if self.transport == "ws" else None,
            "padded_frames": self.padded_frames if self.transport == "ws" else None,
            "fps": round(self.fps, 2),
            "mean_latency_s": None if math.isnan(self.mean_latency_s) else round(self.mean_latency_s, 3),
            "audio_sent_s": round(self.audio_sent_s, 2),
            "audio_received_s": round(self.audio_samples / self.audio_rate, 2) if self.audio_rate else 0.0,
            "states": self.states,
            "errors": self.errors,
            "warnings": self.warnings,
            "close_code": self.close_code,
        }

    def text(self) -> str:
        """The human summary printed at the end of a CLI run."""
        lat = "n/a" if math.isnan(self.mean_latency_s) else f"{self.mean_latency_s * 1000:.0f} ms"
        kinds = (f" ({self.speech_frames} speech, {self.filler_frames} filler, {self.missing_frames} skipped)"
                 if self.transport == "ws" else f" ({self.filler_frames} filler, per the server's stats)")
        lines = [
            f"backend: {self.backend_description or self.backend or '?'}",
            f"frames received: {self.frames}{kinds} at {self.fps:.1f} fps, {self.width}x{self.height}",
            f"mean latency: {lat}; audio sent {self.audio_sent_s:.1f} s",
            f"states: {' -> '.join(self.states) or 'none'}",
        ]
        for e in self.errors:
            lines.append(f"server error: {e.get('code')}: {e.get('message')}")
        return "\n".join(lines)
