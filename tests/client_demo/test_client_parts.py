"""The client's pieces on their own: file decoding/resampling, pacing, the mp4 writer, URLs, mic errors."""

from __future__ import annotations

import importlib.abc
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from client_demo.audio_source import FileSource, MicrophoneUnavailable, MicSource
from client_demo.summary import RunOptions, RunSummary
from streaming.media_files import Mp4Writer, read_audio_file
from tests.helpers.media_checks import mp4_facts


def _write_tone(path: Path, rate: int, layout: str, seconds: float, freq: float = 440.0) -> None:
    with av.open(str(path), "w") as c:
        s = c.add_stream("pcm_s16le", rate=rate)
        s.layout = layout
        n = int(rate * seconds)
        ch = 1 if layout == "mono" else 2
        tone = (np.sin(2 * np.pi * freq * np.arange(n) / rate) * 10000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.repeat(tone[:, None], ch, 1).reshape(1, -1), format="s16", layout=layout)
        frame.sample_rate = rate
        frame.pts, frame.time_base = 0, Fraction(1, rate)
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode(None):
            c.mux(p)


def test_read_audio_file_resamples_any_rate_and_layout_to_16k_mono(tmp_path: Path) -> None:
    src = tmp_path / "tone.wav"
    _write_tone(src, 44_100, "stereo", 1.5, freq=500.0)
    pcm = read_audio_file(src)
    assert pcm.dtype == np.int16 and pcm.ndim == 1
    assert pcm.size == pytest.approx(24_000, abs=40)
    spectrum = np.abs(np.fft.rfft(pcm[2000:18000].astype(np.float64)))
    assert np.argmax(spectrum) == pytest.approx(500, abs=2)  # 16000 samples: 1 Hz per bin


def test_read_audio_file_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothere.wav"):
        read_audio_file(tmp_path / "nothere.wav")


async def test_file_source_paces_chunks_in_real_time(speech_dir: Path) -> None:
    src = FileSource(speech_dir / "speech_de1.wav", seconds=0.5)
    t0 = time.monotonic()
    chunks = [c async for c in src.chunks()]
    elapsed = time.monotonic() - t0
    assert [c.size for c in chunks[:-1]] == [320] * (len(chunks) - 1)
    assert sum(c.size for c in chunks) == 8000
    assert 0.4 <= elapsed < 0.8  # the last chunk is due at 0.48 s


async def test_file_source_fast_mode_does_not_wait(speech_dir: Path) -> None:
    src = FileSource(speech_dir / "speech_en1.wav", realtime=False)
    t0 = time.monotonic()
    n = sum([c.size async for c in src.chunks()])
    assert n == src.samples.size and time.monotonic() - t0 < 0.5 * src.duration_s


def test_mp4_writer_falls_back_to_mpeg4_and_keeps_frame_timing(tmp_path: Path) -> None:
    out = tmp_path / "m.mp4"
    w = Mp4Writer(out, fps=25, audio_rate=16_000, video_codec="mpeg4")
    for i in range(30):
        w.audio(np.full(640, 1000 if i % 2 else -1000, np.int16), 16_000)
        w.video(i, np.full((61, 81, 3), i * 8, np.uint8))  # odd size: cropped to even for yuv420p
    w.close()
    f = mp4_facts(out)
    assert (f.video_codec, f.video_frames, f.width, f.height, f.fps) == ("mpeg4", 30, 80, 60, 25)
    assert f.video_s == pytest.approx(1.2, abs=0.01)
    assert f.audio_s == pytest.approx(1.2, abs=0.07)  # AAC pads to whole 1024-sample frames


def test_mp4_writer_crf_0_is_lossless_in_yuv_and_bad_crf_is_refused(tmp_path: Path) -> None:
    """Grey frames survive RGB -> YUV -> RGB within one step, so crf 0 must give them back within 1;
    the default crf must not (it quantises the noise away)."""
    rng = np.random.default_rng(0)
    grey = [np.repeat(rng.integers(0, 256, (32, 32, 1), dtype=np.uint8), 3, axis=2) for _ in range(5)]

    def worst(crf: int) -> int:
        out = tmp_path / f"crf{crf}.mp4"
        w = Mp4Writer(out, crf=crf)
        for i, image in enumerate(grey):
            w.video(i, image)
        w.close()
        with av.open(str(out)) as c:
            back = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        return max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(grey, back, strict=True))

    assert worst(0) <= 1 < worst(23)
    with pytest.raises(ValueError, match="crf"):
        Mp4Writer(tmp_path / "x.mp4", crf=52)


def test_mp4_writer_resamples_stereo_48k_audio_and_writes_nothing_without_frames(tmp_path: Path) -> None:
    out = tmp_path / "s.mp4"
    w = Mp4Writer(out, audio_rate=48_000)
    w.audio(np.zeros((960, 2), np.int16), 48_000)  # audio before the first frame waits for the streams
    for i in range(10):
        w.video(i, np.zeros((32, 32, 3), np.uint8))
        w.audio(np.zeros((1920, 2), np.int16), 48_000)
    w.close()
    assert mp4_facts(out).audio_s == pytest.approx(0.42, abs=0.05)
    empty = tmp_path / "never.mp4"
    Mp4Writer(empty).close()
    assert not empty.exists()


@pytest.mark.parametrize(
    "url, token, expected",
    [
        ("http://127.0.0.1:8080", None, "ws://127.0.0.1:8080/ws"),
        ("https://example.org/live/", "a b", "wss://example.org/live/ws?token=a+b"),
    ],
)
def test_ws_url_and_auth_header(url: str, token: str | None, expected: str) -> None:
    opts = RunOptions(url=url, token=token)
    assert opts.ws_url() == expected
    assert opts.auth_headers() == ({"Authorization": f"Bearer {token}"} if token else {})


def test_summary_idle_after_interrupt_needs_interrupted_then_idle() -> None:
    s = RunSummary("ws")
    for st in ["idle", "speaking", "idle", "speaking"]:
        s.add_state(st)
    mark = len(s.states)
    assert not s.idle_after_interrupt(mark)
    s.add_state("interrupted")
    assert not s.idle_after_interrupt(mark)
    s.add_state("idle")
    assert s.idle_after_interrupt(mark)
    assert not s.idle_after_interrupt(len(s.states))


class _BrokenPortAudio(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):  # noqa: ANN001, ANN201
        if name == "sounddevice":
            raise OSError("PortAudio library not found")
        return None


def test_microphone_without_sounddevice_or_portaudio_says_what_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    with pytest.raises(MicrophoneUnavailable, match="pip install sounddevice"):
        MicSource()
    monkeypatch.delitem(sys.modules, "sounddevice")
    monkeypatch.setattr(sys, "meta_path", [_BrokenPortAudio(), *sys.meta_path])
    with pytest.raises(MicrophoneUnavailable, match="libportaudio2"):
        MicSource()


def test_summary_text_reports_frames_fps_and_latency() -> None:
    s = RunSummary("ws", backend="lite", frames=3, latencies=[0.2, 0.4])
    s.first_frame_at, s.last_frame_at = 0.0, 0.08
    text = s.text()
    assert "frames received: 3" in text and "25.0 fps" in text and "300 ms" in text
