"""JSON messages common to every transport (docs/protocol.md); what differs follows what the transport
declares (`Transport`), never its name."""

from __future__ import annotations

import math
from typing import Any

from streaming.generator import SAMPLE_RATE
from streaming.session import Session

from .config import PROTOCOL_VERSION
from .transports import Transport


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 4)


def ready(session: Session, transport: Transport) -> dict[str, Any]:
    """Frames in band (the client unpacks them itself): also the protocol version and the frames' audio layout."""
    g = session.generator
    w, h = session.output_size
    msg: dict[str, Any] = {"type": "ready"}
    if transport.frames_in_band:
        msg["version"] = PROTOCOL_VERSION
    msg.update({
        "session_id": session.id,
        "backend": g.name,
        "backend_description": g.description,
        "fps": g.window.fps,
        "width": w,
        "height": h,
        "window_frames": g.window.new_frames,
        "avatar": session.avatar.name,
        "input": "generated" if session.settings.generated_speech else "live",
    })
    if session.settings.generated_speech:
        msg["max_buffer_s"] = _num(session.max_buffer_seconds)
    if transport.frames_in_band:
        msg["sample_rate"] = SAMPLE_RATE
        msg["samples_per_frame"] = g.window.samples_per_frame
    return msg


def stats(session: Session, frames: int, dropped_extra: int = 0) -> dict[str, Any]:
    """frames: frames this connection has sent; dropped_extra: frames the transport dropped."""
    s = session.stats()
    return {
        "type": "stats",
        "state": s["state"],
        "latency_s": _num(s["latency_s"]),
        "latency_mean_s": _num(s["latency_mean_s"]),
        "fps": _num(s["fps"]),
        "frames": frames,
        "filler_frames": s["filler_frames"],
        "dropped_frames": s["dropped_frames"] + dropped_extra,
        "buffered_speech_s": _num(s["buffered_speech_s"]),
        "backend": s["backend"],
        "quality": s.get("quality"),  # adaptive quality {steps, size, reason, ...}; None when fixed
        **({"worker": s["worker"]} if "worker" in s else {}),  # cluster mode: the worker running the session
    }


def buffer(session: Session) -> dict[str, Any]:
    """Generated speech's flow control: speech buffered (not yet made into video) and the bound."""
    return {"type": "buffer", "buffered_s": _num(session.buffered_seconds()),
            "max_buffer_s": _num(session.max_buffer_seconds), "segments": session.unfinished_segments}


def state(value: str) -> dict[str, Any]:
    return {"type": "state", "state": value}


def error(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message}


def warning(code: str, message: str) -> dict[str, Any]:
    return {"type": "warning", "code": code, "message": message}
