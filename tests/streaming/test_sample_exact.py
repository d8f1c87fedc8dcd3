"""Issue 13: the audio a session returns is ONE continuous resampling of what the client sent.

The engine once padded a window with silence whenever, at its deadline mid-utterance, less than a
window of speech was buffered. A real-time client at 48 kHz is always 16 samples (the resampler's
filter delay) short of a message boundary, so a message arriving a few ms after the deadline left
the buffer at window - 16 samples and 16 zeros went into the middle of the input. These tests send
48 kHz stereo speech in real time, phase-locked to the session's own frames so that late messages
land on every phase of the window deadlines, and compare every returned sample.
"""

from __future__ import annotations

import asyncio

import numpy as np

from streaming.audio_input import PcmFormat
from streaming.engine import Engine
from streaming.generator import Avatar

from ..helpers.audio_exact import assert_one_continuous_resampling, one_resampling, to_rate_stereo
from ..helpers.engine_runs import read_wav
from ..helpers.pattern_backend import PatternGenerator

AVATAR = Avatar("test", np.zeros((1, 24, 32, 3), np.uint8))
RATE = 48_000
MESSAGE = 960  # 20 ms at 48 kHz
FMT = PcmFormat(RATE, 2, "s16")


async def stream_locked_to_frames(session, pcm: np.ndarray, start_frame: int, late: dict[int, float]) -> list:
    """Play the consumer and a real-time 48 kHz client at once: messages start 10 ms after frame
    `start_frame` is emitted (fixing their phase against the window deadlines) and message i is
    held back by late[i] seconds (the ones after it then follow at once, as a network would)."""
    frames: list = []
    started = asyncio.Event()
    t0 = 0.0

    async def consume() -> None:
        nonlocal t0
        async for f in session.frames():
            frames.append(f)
            if f.index == start_frame:
                t0 = f.emitted_at
                started.set()

    async def send() -> None:
        await started.wait()
        loop = asyncio.get_running_loop()
        step = MESSAGE * FMT.bytes_per_frame
        data = pcm.tobytes()
        for i, pos in enumerate(range(0, len(data), step)):
            await asyncio.sleep(max(0.0, t0 + 0.010 + i * MESSAGE / RATE + late.get(i, 0.0) - loop.time()))
            session.push_pcm(data[pos : pos + step], FMT)
        session.end_input()

    consumer = asyncio.create_task(consume())
    await send()
    await asyncio.sleep(0.6)  # the tail plays
    consumer.cancel()
    await asyncio.gather(consumer, return_exceptions=True)
    return frames


async def test_realtime_48k_stereo_with_late_messages_comes_back_as_one_continuous_resampling(speech_dir):
    speech = read_wav(speech_dir / "speech_en1.wav")[: 16000 * 6]  # speech with short pauses
    pcm = to_rate_stereo(speech, RATE)
    ref = one_resampling(pcm, FMT)
    # 40 ms late (well inside the 120 ms margin), on messages 30, 71, 112, ...: 41 = 1 mod 8, so over
    # the stream every phase of the 8 messages a 4-frame window lasts is hit.
    late = {30 + 41 * j: 0.040 for j in range(7)}
    engine = Engine(PatternGenerator(new_frames=4, lookahead_frames=1))
    try:
        sessions = [await engine.open_session(AVATAR) for _ in range(4)]
        runs = await asyncio.gather(*(stream_locked_to_frames(s, pcm, 4 + k, late) for k, s in enumerate(sessions)))
        for s in sessions:
            await s.close()
    finally:
        await engine.shutdown()
    for k, frames in enumerate(runs):  # the four start phases of a 4-frame window
        assert [f.index for f in frames] == list(range(len(frames)))
        assert not any(f.filler for f in frames), f"phase {k}: the playout ran dry"
        out = np.concatenate([f.audio for f in frames])
        assert_one_continuous_resampling(out, ref, f"phase {k}")
