"""The Python client against the real server app (in-process, loopback): speech file in, mp4 out.

Real websockets, real aiortc on both ends, real encoders. The mp4 is decoded back and the sent
speech is found in its audio track by cross-correlation.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest

from client_demo.mic_client import ClientConfig, main, run_client
from client_demo.summary import RunOptions
from streaming.media_files import pick_video_codec, read_audio_file
from tests.helpers.media_checks import locate_speech_chunks, mp4_facts

pytestmark = pytest.mark.timeout(60)

CODEC_NAMES = {"libx264": "h264", "mpeg4": "mpeg4"}


def _even(width: int, height: int) -> tuple[int, int]:
    return width - width % 2, height - height % 2  # yuv420p


def _assert_speech_in_order(
    found: list[tuple[float, float]], min_corr: float, video_s: float, summary, unseen_breaks: int = 0
) -> None:
    """Every voiced second of the sent speech is in the recording, in order, one second apart or more.

    The server may legitimately insert silence mid-speech: filler frames (it ran late), skipped
    frames (slow reader), a window flushed before all its audio arrived (padded frames). Each can
    split one piece, so at most that many pieces may match poorly. `unseen_breaks`: insertions
    this transport cannot see (WebRTC has no per-frame flags).
    """
    assert len(found) >= 2, "too little voiced speech to check"
    offsets = [o for o, _ in found]
    poor = [f for f in found if f[1] <= min_corr]
    breaks = summary.filler_frames + summary.missing_frames + summary.padded_frames + unseen_breaks
    assert len(poor) <= breaks, f"speech pieces not found in the mp4 audio: {found}; {summary.as_dict()}"
    assert len(poor) < len(found)
    assert all(b - a >= 0.99 for a, b in zip(offsets, offsets[1:], strict=False)), f"speech out of order: {offsets}"
    assert offsets[-1] + 1.0 <= video_s + 0.05


async def test_websocket_file_roundtrip_writes_an_mp4_with_the_speech_in_sync(server, speech_dir: Path, tmp_path: Path) -> None:
    wav = speech_dir / "speech_de1.wav"
    duration = read_audio_file(wav).size / 16_000
    out = tmp_path / "ws.mp4"
    summary = await run_client(ClientConfig(RunOptions(url=server.url), wav, out, transport="ws"))

    assert summary.errors == [] and summary.close_code == 1000
    assert summary.backend == server.info["backend"]
    assert 22 <= summary.fps <= 28, summary.as_dict()
    assert "speaking" in summary.states
    # Every frame made from sent audio carries a latency: all the speech came back (last frame may be partial).
    fps = server.info["fps"]
    assert len(summary.latencies) + summary.missing_frames + summary.padded_frames >= math.floor(duration * fps) - 1
    assert 0 < summary.mean_latency_s < 2.0

    facts = mp4_facts(out)
    assert facts.video_codec == CODEC_NAMES[pick_video_codec()]
    assert facts.video_frames == summary.frames
    assert facts.fps == fps
    timeline = summary.frames + summary.missing_frames  # skipped indices stay as gaps in the pts
    assert summary.width > 0 and summary.height > 0
    assert (facts.width, facts.height) == _even(summary.width, summary.height)
    assert facts.video_s == pytest.approx(timeline / fps, abs=0.05)
    assert facts.video_s >= duration
    assert facts.audio_codec == "aac"
    assert facts.audio_s == pytest.approx(facts.video_s, abs=0.1)  # 640 samples travel with each frame
    _assert_speech_in_order(locate_speech_chunks(out, wav), min_corr=0.9, video_s=facts.video_s, summary=summary)


async def test_websocket_interrupt_drops_the_rest_and_returns_to_idle(server, speech_dir: Path) -> None:
    wav = speech_dir / "speech_en1.wav"
    summary = await run_client(ClientConfig(RunOptions(url=server.url, interrupt_after=1.5), wav, None, transport="ws"))
    assert summary.errors == []
    assert summary.interrupted and summary.audio_sent_s == pytest.approx(1.5, abs=0.05)
    assert summary.idle_after_interrupt(0), summary.states
    # Only speech sent before the interrupt can come back: at most 1.5 s worth of speech frames.
    assert summary.speech_frames <= 1.5 * server.info["fps"] + 1


async def test_webrtc_file_roundtrip_writes_an_mp4(server, speech_dir: Path, tmp_path: Path) -> None:
    wav = speech_dir / "speech_en1.wav"
    out = tmp_path / "rtc.mp4"
    seconds = 3.0
    summary = await run_client(ClientConfig(RunOptions(url=server.url, seconds=seconds), wav, out, transport="webrtc"))

    assert not server.engine.sessions  # the client hung up (DELETE /offer/{id}) before returning
    assert summary.errors == []
    assert summary.backend_description == server.info["backend_description"]
    assert summary.audio_sent_s == pytest.approx(seconds, abs=0.05)
    assert 20 <= summary.fps <= 30, summary.as_dict()
    assert summary.latencies and 0 < summary.mean_latency_s < 2.0
    assert "speaking" in summary.states

    facts = mp4_facts(out)
    assert facts.video_frames == summary.frames
    # Frames WebRTC dropped on a loaded machine leave pts gaps, which lower the measured average rate.
    assert facts.fps == pytest.approx(server.info["fps"], abs=2.5)
    assert facts.video_s >= seconds
    assert facts.audio_codec == "aac"
    assert facts.audio_s == pytest.approx(facts.video_s, abs=0.5)
    _assert_speech_in_order(locate_speech_chunks(out, wav, seconds=seconds), min_corr=0.6, video_s=facts.video_s, summary=summary, unseen_breaks=1)


async def test_cli_streams_a_file_and_prints_a_json_summary(server, speech_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli.mp4"
    argv = ["--url", server.url, "-i", str(speech_dir / "speech_de1.wav"), "--seconds", "1.5", "-o", str(out),
            "--token", "secret-token", "--no-window", "--json"]
    rc = await asyncio.to_thread(main, argv)
    printed = capsys.readouterr().out
    assert rc == 0, printed
    report = json.loads(printed[: printed.rindex("}") + 1])
    assert report["frames"] > 0 and report["audio_sent_s"] == pytest.approx(1.5, abs=0.05)
    assert mp4_facts(out).video_frames == report["frames"]
