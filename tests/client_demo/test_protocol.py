"""The client's websocket message code against the byte layouts written in docs/protocol.md.

Expected bytes are spelled out by hand from the doc's tables (offsets, little-endian), not produced
by the code under test.
"""

from __future__ import annotations

import math
import struct

import pytest

from client_demo.protocol import (
    AudioFormat,
    FrameMessage,
    ProtocolError,
    audio_header,
    audio_message,
    build_frame_message,
    build_hello,
    parse_frame_message,
)

SPF = 640  # 16 kHz / 25 fps


def _doc_frame(index: int, flags: int, latency: float, jpeg: bytes, pcm: bytes, tag: int = 0x46, version: int = 1) -> bytes:
    # offset 0 u8 tag, 1 u8 version, 2 u8 flags, 3 u8 reserved, 4 u32 index, 8 f32 latency, 12 u32 N
    head = bytes([tag, version, flags, 0])
    head += index.to_bytes(4, "little")
    head += struct.pack("<f", latency)
    head += len(jpeg).to_bytes(4, "little")
    return head + jpeg + pcm


def test_audio_header_is_A_version_speaker_reserved() -> None:
    assert audio_header() == b"A\x01\x00\x00"
    assert audio_header(3) == b"A\x01\x03\x00"


def test_audio_message_prefixes_pcm_and_refuses_over_one_mib() -> None:
    pcm = bytes(range(10))
    assert audio_message(pcm, 1) == b"A\x01\x01\x00" + pcm
    audio_message(b"\x00" * (1 << 20))
    with pytest.raises(ValueError, match="at most"):
        audio_message(b"\x00" * ((1 << 20) + 1))


def test_hello_carries_required_fields_and_declared_audio() -> None:
    h = build_hello("astronaut", AudioFormat(48000, 2, "flt"), speakers=2, jpeg_quality=70)
    assert h["type"] == "hello" and h["version"] == 1
    assert h["audio"] == {"sample_rate": 48000, "channels": 2, "format": "flt"}
    assert h["avatar"] == "astronaut" and h["speakers"] == 2
    assert h["video"] == {"format": "jpeg", "quality": 70}
    assert "avatar" not in build_hello()  # server default


@pytest.mark.parametrize("bad", [dict(format="u8"), dict(sample_rate=4000), dict(sample_rate=200_000)])
def test_audio_format_rejects_what_the_doc_does_not_allow(bad: dict) -> None:
    with pytest.raises(ValueError):
        AudioFormat(**bad)


def test_parse_frame_reads_every_field_at_its_doc_offset() -> None:
    jpeg = b"\xff\xd8fakejpeg\xff\xd9"
    pcm = struct.pack(f"<{SPF}h", *range(-320, 320))
    msg = parse_frame_message(_doc_frame(70000, 0b01, 0.3125, jpeg, pcm), SPF)
    assert msg.index == 70000
    assert msg.speech and not msg.filler
    assert msg.latency_s == pytest.approx(0.3125)
    assert msg.jpeg == jpeg
    assert msg.pcm == pcm and len(msg.pcm) == 2 * SPF


def test_parse_frame_maps_nan_latency_to_none_and_reads_filler_flag() -> None:
    msg = parse_frame_message(_doc_frame(5, 0b10, math.nan, b"J", b"\x00" * 2 * SPF), SPF)
    assert msg.latency_s is None
    assert msg.filler and not msg.speech


@pytest.mark.parametrize(
    "data, match",
    [
        (_doc_frame(0, 0, 0.0, b"J", b"\x00" * 2 * SPF, tag=0x41), "expected 0x46"),
        (_doc_frame(0, 0, 0.0, b"J", b"\x00" * 2 * SPF, version=2), "version 2"),
        (_doc_frame(0, 0, 0.0, b"J", b"\x00" * (2 * SPF - 2)), "should be"),
        (b"F\x01\x00", "shorter"),
    ],
)
def test_parse_frame_rejects_malformed_messages(data: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        parse_frame_message(data, SPF)


def test_build_frame_message_matches_the_doc_layout() -> None:
    pcm = b"\x01\x00" * SPF
    msg = FrameMessage(9, 1, 0.25, b"JPEG", pcm)
    assert build_frame_message(msg) == _doc_frame(9, 1, 0.25, b"JPEG", pcm)
    assert parse_frame_message(build_frame_message(FrameMessage(1, 0, None, b"", pcm)), SPF).latency_s is None
