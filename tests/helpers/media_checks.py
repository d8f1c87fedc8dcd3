"""Measurements on what the clients wrote: decoded mp4 facts and where the sent speech sits in it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from streaming.media_files import read_audio_file


@dataclass
class Mp4Facts:
    video_codec: str
    video_frames: int
    fps: float
    width: int
    height: int
    video_s: float
    audio_codec: str
    audio_s: float


def mp4_facts(path: Path) -> Mp4Facts:
    """Decode every frame (counts from the decoder, not from container metadata)."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = [f for f in c.decode(video=0)]
        video_s = (frames[-1].pts - frames[0].pts) * float(frames[0].time_base) + 1 / float(v.average_rate)
        facts = (v.codec_context.name, len(frames), float(v.average_rate), frames[0].width, frames[0].height, video_s)
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        samples = sum(f.samples for f in c.decode(audio=0))
        audio = (a.codec_context.name, samples / a.rate)
    return Mp4Facts(*facts, *audio)


def _best_match(out: np.ndarray, ref: np.ndarray) -> tuple[int, float]:
    n = 1 << int(np.ceil(np.log2(out.size + ref.size)))
    corr = np.fft.irfft(np.fft.rfft(out, n) * np.conj(np.fft.rfft(ref, n)), n)[: max(1, out.size - ref.size + 1)]
    lag = int(np.argmax(corr))
    seg = out[lag : lag + ref.size]
    r = ref[: seg.size]
    denom = np.sqrt(np.dot(seg, seg) * np.dot(r, r))
    return lag, float(np.dot(seg, r) / denom) if denom else 0.0


def locate_speech_chunks(
    recording: Path, speech: Path, chunk_s: float = 1.0, seconds: float | None = None, rate: int = 16_000
) -> list[tuple[float, float]]:
    """For each voiced `chunk_s` piece of `speech`: (offset in the recording in s, correlation).

    Piecewise, because a stream may legitimately contain inserted silence (filler frames when the
    server ran late, or frames it skipped), which shifts later speech against earlier speech.
    """
    out = read_audio_file(recording, rate).astype(np.float64)
    ref = read_audio_file(speech, rate).astype(np.float64)
    if seconds is not None:
        ref = ref[: int(seconds * rate)]
    step = int(chunk_s * rate)
    loudest = np.abs(ref).max()
    found = []
    for start in range(0, ref.size - step + 1, step):
        piece = ref[start : start + step]
        if np.abs(piece).max() < 0.1 * loudest:
            continue  # a pause: nothing to find
        lag, corr = _best_match(out, piece)
        found.append((lag / rate, corr))
    return found


def locate_speech(recording: Path, speech: Path, seconds: float | None = None, rate: int = 16_000) -> tuple[float, float]:
    """(offset in s, normalised correlation) of the best match of `speech` (its first `seconds`)
    inside the recording's audio."""
    out = read_audio_file(recording, rate).astype(np.float64)
    ref = read_audio_file(speech, rate).astype(np.float64)
    if seconds is not None:
        ref = ref[: int(seconds * rate)]
    n = 1 << int(np.ceil(np.log2(out.size + ref.size)))
    corr = np.fft.irfft(np.fft.rfft(out, n) * np.conj(np.fft.rfft(ref, n)), n)[: out.size]
    lag = int(np.argmax(corr))
    seg = out[lag : lag + ref.size]
    r = ref[: seg.size]
    denom = np.sqrt(np.dot(seg, seg) * np.dot(r, r))
    return lag / rate, float(np.dot(seg, r) / denom) if denom else 0.0
