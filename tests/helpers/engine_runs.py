"""Feeding the engine from test speech: read a WAV as float samples, push it as a microphone would,
run a whole clip offline."""

from __future__ import annotations

import asyncio
import wave

import numpy as np

from streaming.engine import Engine
from streaming.generator import Avatar, Generator
from streaming.planner import PlannerSettings
from streaming.session import SessionSettings


def read_wav(path) -> np.ndarray:
    """16 kHz mono PCM16 WAV -> float32 samples in [-1, 1)."""
    with wave.open(str(path)) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1, f"{path}: expected 16 kHz mono"
        return np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768.0


async def feed_realtime(session, audio: np.ndarray, chunk: int = 320) -> None:
    """Push audio in 20 ms chunks paced by the wall clock, as a microphone would."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for i in range(0, audio.size, chunk):
        await asyncio.sleep(max(0.0, t0 + i / 16000 - loop.time()))
        session.push_audio(audio[i : i + chunk])


async def offline_frames(gen: Generator, speech: np.ndarray, avatar: Avatar, speakers: int = 1) -> list:
    """All frames of one offline session fed `speech` ([n] or [speakers, n]) at once, then ended."""
    engine = Engine(gen)
    try:
        settings = SessionSettings(speakers=speakers, planner=PlannerSettings(realtime=False), max_buffer_s=60)
        session = await engine.open_session(avatar, settings)
        for s in range(speakers):
            session.push_audio(speech if speakers == 1 else speech[s], speaker=s)
        session.end_input()
        frames = [f async for f in session.frames()]
        await session.close()
    finally:
        await engine.shutdown()
    return frames
