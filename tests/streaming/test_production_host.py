"""ProductionHost, what a cluster worker runs, in one process (no Ray): plain messages in, frames out."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from streaming.generator import SAMPLE_RATE, Avatar
from streaming.link import AudioChunk, PlayoutReport
from streaming.production_host import HostFull, ProductionHost, UnknownSession
from streaming.session_settings import SessionSettings

from ..helpers.pattern_backend import PatternGenerator, audio_code

AVATAR = Avatar("test", np.zeros((1, 24, 32, 3), np.uint8))


async def take_frames(host: ProductionHost, sid: str, count: int, timeout: float = 5.0) -> list:
    """Take until `count` frames came, reporting each as played (as the gateway's pacer would)."""
    frames: list = []
    end = time.monotonic() + timeout
    while len(frames) < count:
        assert time.monotonic() < end, f"only {len(frames)} frames"
        messages, _ = await host.take(sid, 0.1)
        for kind, payload in messages:
            if kind == "frame":
                frames.append(payload)
                host.feed(sid, [("played", PlayoutReport(payload.seq, 0))])
    return frames


async def test_hosted_sessions_make_frames_from_their_own_audio_on_the_peer_clock():
    gen = PatternGenerator(new_frames=4)
    host = ProductionHost(gen, capacity=2)
    try:
        peer_offset = 1000.0  # the gateway's clock reads 1000 s less than ours
        sizes = [await host.open(sid, AVATAR, SessionSettings(), time.monotonic() - peer_offset)
                 for sid in ("a", "b")]
        assert sizes == [(32, 24), (32, 24)] and host.load == 2
        rng = np.random.default_rng(0)
        speech = {sid: (rng.standard_normal(SAMPLE_RATE) * 0.1).astype(np.float32) for sid in ("a", "b")}
        for sid, samples in speech.items():
            arrival = time.monotonic() - peer_offset
            host.feed(sid, [("audio", AudioChunk(0, samples, arrival))])
        for sid in ("a", "b"):
            frames = await take_frames(host, sid, 40)
            said = [f for f in frames if f.speech]
            assert said, f"{sid}: no speech frames"
            out = np.concatenate([f.audio for f in said])
            n = speech[sid].size  # its own audio, in order, then the last window's silent padding
            np.testing.assert_array_equal(out[:n], speech[sid])
            assert out.size < n + gen.window.window_samples and not out[n:].any()
            assert all(audio_code(f.audio) == int(f.image[1, 0, 0]) for f in said)  # made from that audio
            # stamps came back on the peer's clock: waiting time measured there is small, not 1000 s
            assert all(abs((time.monotonic() - peer_offset) - f.arrival) < 5 for f in said if f.arrival)
        info = host.info()
        assert info["sessions"] == 2 and info["jobs_done"] >= 20 and info["realtime_factor"] > 1
    finally:
        await host.shutdown()


async def test_a_full_host_refuses_and_an_unknown_session_is_reported_not_crashed():
    host = ProductionHost(PatternGenerator(), capacity=1)
    try:
        await host.open("a", AVATAR, SessionSettings(), time.monotonic())
        with pytest.raises(HostFull):
            await host.open("b", AVATAR, SessionSettings(), time.monotonic())
        with pytest.raises(UnknownSession):
            host.feed("nobody", [])
        with pytest.raises(UnknownSession):
            await host.take("nobody", 0.01)
        assert await host.close("a") and not await host.close("a")
        await host.open("b", AVATAR, SessionSettings(), time.monotonic())  # the slot is free again
    finally:
        await host.shutdown()


async def test_a_session_nobody_takes_from_expires_and_frees_its_slot():
    gen = PatternGenerator()
    host = ProductionHost(gen, capacity=1, lease_s=0.3)
    try:
        await host.open("a", AVATAR, SessionSettings(), time.monotonic())
        await host.take("a", 0.01)
        assert await host.expire() == 0
        await asyncio.sleep(0.4)  # its gateway went away
        assert await host.expire() == 1
        assert host.load == 0 and gen.closed == ["a"] and host.info()["expired"] == 1
    finally:
        await host.shutdown()
