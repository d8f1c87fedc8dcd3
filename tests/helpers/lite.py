"""Helpers for the lite-backend tests: read test speech, run a generator over a clip window by window."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from streaming.generator import SAMPLE_RATE, WindowJob


def read_wav_16k(path: Path) -> np.ndarray:
    """Mono float32 [-1, 1] at 16 kHz (first channel; linear resampling if the file is another rate)."""
    with wave.open(str(path)) as w:
        rate, ch, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        raw = w.readframes(w.getnframes())
    assert width == 2, f"{path}: expected 16-bit PCM"
    x = np.frombuffer(raw, np.int16).reshape(-1, ch)[:, 0].astype(np.float32) / 32768.0
    if rate != SAMPLE_RATE:
        t = np.arange(int(len(x) * SAMPLE_RATE / rate)) * (rate / SAMPLE_RATE)
        x = np.interp(t, np.arange(len(x)), x).astype(np.float32)
    return x


def run_clip(gen, state, audio: np.ndarray, speech: bool, first_frame: int = 0, first_index: int = 0) -> np.ndarray:
    """Feed `audio` [T] to `gen` in consecutive windows like the engine does -> frames [F, H, W, 3]."""
    spec = gen.window
    ctx = spec.context_frames * spec.samples_per_frame
    padded = np.concatenate([np.zeros(ctx, np.float32), audio, np.zeros(spec.job_samples, np.float32)])
    frames = []
    for w in range(len(audio) // spec.window_samples):
        a = padded[w * spec.window_samples: w * spec.window_samples + spec.job_samples]
        job = WindowJob(state.session_id, first_index + w, first_frame + w * spec.new_frames, a[None], speech)
        out = list(gen.generate(state, job))
        assert len(out) == spec.new_frames
        frames += out
    return np.stack(frames)


def region_motion(frames: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Mean absolute frame-to-frame difference inside (x0, y0, x1, y1), one value per step [F-1]."""
    x0, y0, x1, y1 = box
    part = frames[:, y0:y1, x0:x1].astype(np.float32)
    return np.abs(np.diff(part, axis=0)).mean(axis=(1, 2, 3))
