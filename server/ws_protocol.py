"""The websocket protocol's messages (docs/protocol.md), as pure functions: parse `hello`, audio
headers and control messages, pack frame messages. No I/O, so every rule is testable alone."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.timebase import SAMPLE_RATE
from streaming.audio_input import AudioFormatError, PcmFormat
from streaming.output import OutputFrame
from streaming.session import MAX_SPEAKERS

from . import client_json
from .avatars import AvatarError, validate_name
from .config import PROTOCOL_VERSION
from .tracks import to_pcm16

AUDIO_MAGIC = 0x41  # 'A'
FRAME_MAGIC = 0x46  # 'F'
AUDIO_HEADER = struct.Struct("<BBBB")
FRAME_HEADER = struct.Struct("<BBBBIfI")
FLAG_SPEECH = 1
FLAG_FILLER = 2
CONTROL_TYPES = ("interrupt", "end_of_speech", "segment_end", "end_session", "ping", "stats", "bye")
INPUT_MODES = ("live", "generated")

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_UNKNOWN_AVATAR = 4404
CLOSE_TIMEOUT = 4408
CLOSE_TOO_LARGE = 4413
CLOSE_TOO_MANY = 4429
CLOSE_SESSION_FAILED = 4500
CLOSE_CLUSTER_FULL = 4503  # cluster mode: no worker has a free slot (docs/cluster.md)
CLOSE_INTERNAL_ERROR = 1011


class ProtocolError(Exception):
    """A client broke the protocol: send `error` {code, message}, then close with `close_code`."""

    def __init__(self, code: str, message: str, close_code: int = CLOSE_PROTOCOL) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = close_code


@dataclass(frozen=True)
class Hello:
    version: int
    pcm: PcmFormat
    avatar: str | None
    speakers: int
    jpeg_quality: int
    generated: bool = False  # `input: "generated"`: speech from a TTS engine (docs/agents.md)


def _int_field(value: Any, name: str, lo: int, hi: int, code: str = "bad_hello") -> int:
    """JSON integers (integral floats like 16000.0 too); anything else is a protocol error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
        isinstance(value, float) and (not math.isfinite(value) or not value.is_integer())
    ):
        raise ProtocolError(code, f"{name} must be an integer from {lo} to {hi}, got {value!r}")
    v = int(value)
    if not lo <= v <= hi:
        raise ProtocolError(code, f"{name} must be from {lo} to {hi}, got {v}")
    return v


def check_text_size(text: str, max_bytes: int) -> None:
    """A text message has the documented 1 MiB limit too (`max_bytes` of UTF-8): 4413 beyond it."""
    if len(text) * 4 <= max_bytes:  # UTF-8 takes at most 4 bytes a character: no need to encode
        return
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise ProtocolError("too_large", f"text message of {size} bytes; the limit is {max_bytes}", 4413)


def parse_json_message(text: str) -> dict[str, Any]:
    try:
        msg = client_json.loads(text)
    except ValueError as exc:
        raise ProtocolError("bad_message", f"text messages must be JSON: {exc}") from exc
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError("bad_message", "JSON messages must be objects with a string 'type'")
    return msg


def parse_hello(text: str, default_quality: int = 80) -> Hello:
    msg = parse_json_message(text)
    if msg["type"] != "hello":
        raise ProtocolError("bad_hello", f"the first message must be hello, got {msg['type'][:40]!r}")
    version = msg.get("version")
    if isinstance(version, bool) or version != PROTOCOL_VERSION:  # True == 1 in Python, not in JSON
        raise ProtocolError(
            "bad_version", f"protocol version {version!r} not supported: this server speaks {PROTOCOL_VERSION}"
        )
    audio = msg.get("audio", {})
    if not isinstance(audio, dict):
        raise ProtocolError("bad_hello", "'audio' must be an object {sample_rate, channels, format}")
    rate = _int_field(audio.get("sample_rate", SAMPLE_RATE), "audio.sample_rate", 8000, 192000, "bad_audio_format")
    channels = _int_field(audio.get("channels", 1), "audio.channels", 1, 8, "bad_audio_format")
    fmt = audio.get("format", "s16")
    try:
        pcm = PcmFormat(rate, channels, fmt if isinstance(fmt, str) else repr(fmt))
    except AudioFormatError as exc:
        raise ProtocolError("bad_audio_format", str(exc)) from exc
    avatar = msg.get("avatar")
    if "avatar" in msg:
        if not isinstance(avatar, str):
            raise ProtocolError("bad_hello", "'avatar' must be a string (an avatar name); leave it out for the default")
        try:
            validate_name(avatar)
        except AvatarError as exc:
            raise ProtocolError(exc.code, exc.message) from exc
    speakers = _int_field(msg.get("speakers", 1), "speakers", 1, MAX_SPEAKERS)
    video = msg.get("video", {})
    if not isinstance(video, dict) or video.get("format", "jpeg") != "jpeg":
        raise ProtocolError("bad_hello", "'video' must be an object with format 'jpeg' (the only one supported)")
    quality = _int_field(video.get("quality", default_quality), "video.quality", 1, 100)
    generated = parse_input_mode(msg.get("input", "live"), speakers)
    return Hello(PROTOCOL_VERSION, pcm, avatar, speakers, quality, generated)


def parse_input_mode(mode: Any, speakers: int) -> bool:
    """`input` of `hello` (and of a WebRTC offer): True for generated speech."""
    if mode not in INPUT_MODES:
        raise ProtocolError("bad_hello", f"'input' must be \"live\" or \"generated\", got {str(mode)[:40]!r}")
    if mode == "generated" and speakers != 1:
        raise ProtocolError("bad_hello", f"generated speech has one speaker; hello declared {speakers}")
    return mode == "generated"


def parse_audio(data: bytes, speakers: int, max_bytes: int) -> tuple[int, memoryview]:
    """A binary audio message -> (speaker, PCM bytes)."""
    if len(data) > max_bytes:
        raise ProtocolError("too_large", f"binary message of {len(data)} bytes; the limit is {max_bytes}", 4413)
    if len(data) < AUDIO_HEADER.size:
        raise ProtocolError("bad_header", f"binary message of {len(data)} bytes is shorter than the 4-byte header")
    magic, version, speaker, reserved = AUDIO_HEADER.unpack_from(data)
    if magic != AUDIO_MAGIC:
        raise ProtocolError("bad_header", f"binary messages must start with 0x41 ('A'), got 0x{magic:02x}")
    if version != PROTOCOL_VERSION:
        raise ProtocolError("bad_version", f"audio header version {version}; this server speaks {PROTOCOL_VERSION}")
    if speaker >= speakers:
        raise ProtocolError("bad_header", f"speaker {speaker} out of range: hello declared {speakers} speaker(s)")
    if reserved != 0:
        raise ProtocolError("bad_header", f"reserved header byte must be 0, got {reserved}")
    return speaker, memoryview(data)[AUDIO_HEADER.size :]


def pack_frame(frame: OutputFrame, jpeg: bytes) -> bytes:
    flags = (FLAG_SPEECH if frame.speech else 0) | (FLAG_FILLER if frame.filler else 0)
    latency = float("nan") if frame.latency is None else float(frame.latency)
    header = FRAME_HEADER.pack(FRAME_MAGIC, PROTOCOL_VERSION, flags, 0, frame.index & 0xFFFFFFFF, latency, len(jpeg))
    return b"".join((header, jpeg, to_pcm16(frame.audio).tobytes()))


@dataclass(frozen=True)
class FrameMessage:
    index: int
    speech: bool
    filler: bool
    latency: float
    jpeg: bytes
    pcm: np.ndarray  # int16 [samples_per_frame]


def unpack_frame(data: bytes) -> FrameMessage:
    """The inverse of `pack_frame` (for clients and tests)."""
    magic, version, flags, _, index, latency, n = FRAME_HEADER.unpack_from(data)
    if magic != FRAME_MAGIC or version != PROTOCOL_VERSION:
        raise ValueError(f"not a version-{PROTOCOL_VERSION} frame message (magic 0x{magic:02x}, version {version})")
    start = FRAME_HEADER.size
    jpeg = bytes(data[start : start + n])
    pcm = np.frombuffer(data[start + n :], np.int16).copy()
    return FrameMessage(index, bool(flags & FLAG_SPEECH), bool(flags & FLAG_FILLER), latency, jpeg, pcm)
