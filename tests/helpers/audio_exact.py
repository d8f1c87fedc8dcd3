"""Checking that audio came back sample-exact: what a client at another rate sends, and the one
continuous resampling of it that a session must return."""

from __future__ import annotations

import av
import numpy as np

from streaming.audio_input import AudioConverter, PcmFormat


def to_rate_stereo(speech: np.ndarray, rate: int) -> np.ndarray:
    """16 kHz float speech -> int16 stereo interleaved at `rate` (what a microphone at that rate gives)."""
    frame = av.AudioFrame.from_ndarray((speech * 32767).astype(np.int16).reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = 16_000
    rs = av.AudioResampler(format="s16", layout="stereo", rate=rate)
    out = [f.to_ndarray().reshape(-1) for f in rs.resample(frame) + rs.resample(None)]
    return np.concatenate(out).astype(np.int16)


def one_resampling(pcm: np.ndarray, fmt: PcmFormat) -> np.ndarray:
    """The whole input through one resampler, flushed at the end: what the session must return."""
    conv = AudioConverter()
    return np.concatenate([conv.convert_pcm(pcm.tobytes(), fmt), conv.flush()])


def assert_one_continuous_resampling(out: np.ndarray, ref: np.ndarray, label: str) -> None:
    """`out` is silence, then exactly `ref` (no sample added, lost or changed), then silence."""
    start = int(np.flatnonzero(out)[0]) - int(np.flatnonzero(ref)[0])
    assert start >= 0, f"{label}: audio came back before it was sent"
    got = out[start : start + ref.size]
    bad = np.flatnonzero(got != ref[: got.size])
    assert got.size == ref.size and not bad.size, (
        f"{label}: returned audio departs from one continuous resampling at 16 kHz sample {bad[:1]} "
        f"({bad[0] / 16000:.3f} s into the input)" if bad.size else f"{label}: returned audio ends early")
    assert not out[:start].any() and not out[start + ref.size :].any(), f"{label}: extra audio around the input"
