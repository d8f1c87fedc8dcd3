"""Helpers for the generated-speech (TTS) tests: a lite server, test speech, a fast sender, the received log."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from model.timebase import SAMPLE_RATE
from streaming.backends.lite import LiteGenerator, LiteSettings

from .server_app import read_wav

GENERATED_HELLO = {"type": "hello", "version": 1, "input": "generated", "video": {"quality": 70}}
AUDIO_HEADER = bytes([0x41, 1, 0, 0])


def small_lite() -> LiteGenerator:
    """The lite backend at a small size: cheap per frame, the same windows and pacing as the default."""
    return LiteGenerator(LiteSettings(width=128, height=128))


def speech_of(speech_dir: Path, seconds: float) -> np.ndarray:
    """`seconds` of int16 test speech (the English and German clips one after another)."""
    clips = [read_wav(speech_dir / name) for name in ("speech_en1.wav", "speech_en2.wav", "speech_de1.wav")]
    pcm = np.concatenate(clips * 3)
    n = int(seconds * SAMPLE_RATE)
    assert pcm.size >= n
    return pcm[:n]


async def send_fast(ws, pcm: np.ndarray, chunk_s: float = 0.1) -> float:
    """Send int16 PCM as fast as the socket takes it, like a TTS engine; returns the seconds it took."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    step = int(chunk_s * SAMPLE_RATE)
    for i in range(0, pcm.size, step):
        await ws.send_bytes(AUDIO_HEADER + pcm[i : i + step].tobytes())
    return loop.time() - t0


def find_input(out: np.ndarray, speech: np.ndarray) -> int:
    """Where `speech` starts in the returned audio `out` (aligned on the first non-zero sample)."""
    first_in = int(np.flatnonzero(speech)[0])
    first_out = int(np.flatnonzero(out)[0])
    return first_out - first_in
