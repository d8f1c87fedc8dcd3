"""The client side of the websocket protocol v1 (docs/protocol.md), written from the doc alone.

Pure functions over bytes and dicts: the `hello` message, the 4-byte header of binary audio
messages, and the parser of binary frame messages. No network code here, so every layout rule of
the doc can be unit-tested on its own.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

from model.timebase import SAMPLE_RATE

PROTOCOL_VERSION = 1
AUDIO_TAG = 0x41  # 'A'
FRAME_TAG = 0x46  # 'F'
MAX_AUDIO_PAYLOAD = 1 << 20  # 1 MiB of PCM per message

FLAG_SPEECH = 0x01
FLAG_FILLER = 0x02

SAMPLE_FORMATS = {"s16": 2, "s32": 4, "flt": 4}
"""PCM sample formats the protocol accepts, with their bytes per sample."""

_FRAME_HEADER = struct.Struct("<BBBBIfI")  # tag, version, flags, reserved, index, latency, jpeg length
FRAME_HEADER_SIZE = _FRAME_HEADER.size  # 16


class ProtocolError(ValueError):
    """A message does not follow docs/protocol.md; the text says which rule it broke."""


@dataclass(frozen=True)
class AudioFormat:
    """How this client lays out the PCM it sends (declared in `hello`)."""

    sample_rate: int = SAMPLE_RATE
    channels: int = 1
    format: str = "s16"

    def __post_init__(self) -> None:
        if self.format not in SAMPLE_FORMATS:
            raise ValueError(f"audio format {self.format!r} not in the protocol: use one of {sorted(SAMPLE_FORMATS)}")
        if not 8000 <= self.sample_rate <= 192_000:
            raise ValueError(f"sample_rate {self.sample_rate} outside 8000-192000 Hz")
        if self.channels < 1:
            raise ValueError("channels must be >= 1")

    @property
    def bytes_per_frame(self) -> int:
        """Bytes of one sample instant over all channels."""
        return SAMPLE_FORMATS[self.format] * self.channels


def build_hello(
    avatar: str | None = None,
    audio: AudioFormat | None = None,
    speakers: int = 1,
    jpeg_quality: int = 80,
) -> dict[str, Any]:
    """The first message a websocket client sends. `avatar=None` leaves the server's default."""
    audio = audio or AudioFormat()
    if not 1 <= speakers <= 4:
        raise ValueError(f"speakers must be 1..4, got {speakers}")
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be 1..100, got {jpeg_quality}")
    msg: dict[str, Any] = {
        "type": "hello",
        "version": PROTOCOL_VERSION,
        "audio": {"sample_rate": audio.sample_rate, "channels": audio.channels, "format": audio.format},
        "speakers": speakers,
        "video": {"format": "jpeg", "quality": jpeg_quality},
    }
    if avatar is not None:
        msg["avatar"] = avatar
    return msg


def audio_header(speaker: int = 0) -> bytes:
    """The 4-byte header of a binary audio message: 'A', version, speaker id, reserved 0."""
    if not 0 <= speaker <= 255:
        raise ValueError(f"speaker id {speaker} does not fit in a byte")
    return bytes((AUDIO_TAG, PROTOCOL_VERSION, speaker, 0))


def audio_message(pcm: bytes, speaker: int = 0) -> bytes:
    """Header + PCM bytes, refusing payloads the server would reject as too large."""
    if len(pcm) > MAX_AUDIO_PAYLOAD:
        raise ValueError(f"{len(pcm)} bytes of PCM in one message; the protocol allows at most {MAX_AUDIO_PAYLOAD}")
    return audio_header(speaker) + bytes(pcm)


@dataclass(frozen=True)
class FrameMessage:
    """One output frame as received: its JPEG and the PCM16 mono 16 kHz audio it was made from."""

    index: int
    flags: int
    latency_s: float | None  # None for idle frames (NaN on the wire)
    jpeg: bytes
    pcm: bytes

    @property
    def speech(self) -> bool:
        return bool(self.flags & FLAG_SPEECH)

    @property
    def filler(self) -> bool:
        return bool(self.flags & FLAG_FILLER)


def parse_frame_message(data: bytes, samples_per_frame: int) -> FrameMessage:
    """Parse a binary frame message; `samples_per_frame` comes from the server's `ready` message."""
    if len(data) < FRAME_HEADER_SIZE:
        raise ProtocolError(f"frame message of {len(data)} bytes is shorter than its {FRAME_HEADER_SIZE}-byte header")
    tag, version, flags, _reserved, index, latency, n_jpeg = _FRAME_HEADER.unpack_from(data)
    if tag != FRAME_TAG:
        raise ProtocolError(f"binary message starts with 0x{tag:02x}, expected 0x{FRAME_TAG:02x} ('F')")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"frame message has protocol version {version}, this client speaks {PROTOCOL_VERSION}")
    n_pcm = 2 * samples_per_frame
    expected = FRAME_HEADER_SIZE + n_jpeg + n_pcm
    if len(data) != expected:
        raise ProtocolError(
            f"frame message is {len(data)} bytes; header says {n_jpeg} bytes of JPEG, "
            f"so with {n_pcm} bytes of audio it should be {expected}"
        )
    jpeg = bytes(data[FRAME_HEADER_SIZE : FRAME_HEADER_SIZE + n_jpeg])
    pcm = bytes(data[FRAME_HEADER_SIZE + n_jpeg :])
    return FrameMessage(index, flags, None if math.isnan(latency) else float(latency), jpeg, pcm)


def build_frame_message(msg: FrameMessage) -> bytes:
    """The inverse of `parse_frame_message` (for tests and tools that replay recordings)."""
    latency = math.nan if msg.latency_s is None else msg.latency_s
    head = _FRAME_HEADER.pack(FRAME_TAG, PROTOCOL_VERSION, msg.flags, 0, msg.index, latency, len(msg.jpeg))
    return head + msg.jpeg + msg.pcm
