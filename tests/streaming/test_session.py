"""Engine end to end with a fingerprinting test backend: pacing, sync, idle, interrupt, faults."""

import asyncio
import threading
import time

import numpy as np
import pytest

from streaming.audio_fifo import AudioOverflow
from streaming.engine import Engine
from streaming.generator import Avatar
from streaming.planner import PlannerSettings
from streaming.session import SessionError, SessionSettings, SessionState

from ..helpers.engine_runs import feed_realtime, read_wav
from ..helpers.pattern_backend import PatternGenerator, audio_code

AVATAR = Avatar("test", np.zeros((1, 24, 32, 3), np.uint8))


async def collect(session, seconds: float) -> list:
    frames = []

    async def run():
        async for f in session.frames():
            frames.append(f)

    task = asyncio.create_task(run())
    await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return frames


def check_pairing(frames) -> None:
    """Every frame carries exactly the audio its image was generated from."""
    for f in frames:
        if not f.filler:
            assert f.image[1, 0, 0] == audio_code(f.audio), f"frame {f.index}: image/audio mismatch"


async def test_live_speech_is_paced_at_25fps_and_comes_back_sample_exact_delayed(speech_dir):
    speech = read_wav(speech_dir / "speech_en1.wav")[: 16000 * 2]
    gen = PatternGenerator(new_frames=4, delay_s=0.01)
    engine = Engine(gen)
    try:
        session = await engine.open_session(AVATAR)
        feeder = asyncio.create_task(asyncio.sleep(0.3))  # some idle first
        await feeder
        collecting = asyncio.create_task(collect(session, 3.4))
        await asyncio.sleep(0.05)
        await feed_realtime(session, speech)
        frames = await collecting
        await session.close()
    finally:
        await engine.shutdown()

    assert 75 <= len(frames) <= 90  # ~3.4 s at 25 fps
    times = np.array([f.emitted_at for f in frames])
    fps = (len(times) - 1) / (times[-1] - times[0])
    assert abs(fps - 25) < 0.5
    assert np.percentile(np.diff(times), 99) < 0.06
    check_pairing(frames)
    assert sum(f.filler for f in frames) <= 2
    # The output audio is the input speech, sample-exact, delayed: find it inside the output.
    out = np.concatenate([f.audio for f in frames])
    first = int(np.flatnonzero(np.abs(out) > 0)[0])
    start = first - int(np.flatnonzero(np.abs(speech) > 0)[0])
    np.testing.assert_array_equal(out[start : start + speech.size], speech)
    lat = [f.latency for f in frames if f.latency is not None]
    assert lat and 0.05 < np.median(lat) < 0.8
    assert frames[0].speech is False  # idle before anyone spoke
    assert any(f.speech for f in frames)


async def test_idle_session_never_stalls_and_runs_backend_on_the_worker_thread():
    gen = PatternGenerator(new_frames=5)
    engine = Engine(gen)
    try:
        session = await engine.open_session(AVATAR)
        frames = await collect(session, 1.2)
        assert session.state == SessionState.IDLE
        await session.close()
    finally:
        await engine.shutdown()
    assert len(frames) >= 26
    assert not any(f.speech for f in frames)
    assert sum(f.filler for f in frames) <= 1
    assert gen.threads == {"generator-worker"}
    assert threading.current_thread().name not in gen.threads


async def test_interrupt_drops_queued_speech_and_returns_to_idle_within_one_window(speech_dir):
    speech = read_wav(speech_dir / "speech_en1.wav")[: 16000 * 4]
    gen = PatternGenerator(new_frames=5)
    engine = Engine(gen)
    try:
        session = await engine.open_session(AVATAR)
        frames = []

        async def run():
            async for f in session.frames():
                frames.append(f)

        task = asyncio.create_task(run())
        session.push_audio(speech)  # 4 s at once: far more than can be played soon
        while not any(f.speech for f in frames):
            await asyncio.sleep(0.01)
        assert session.state == SessionState.SPEAKING
        assert session.buffered_seconds() > 2.0
        n_at_interrupt = len(frames)
        session.interrupt()
        assert session.buffered_seconds() == 0
        await asyncio.sleep(0.6)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert session.state == SessionState.IDLE
        await session.close()
    finally:
        await engine.shutdown()
    after = frames[n_at_interrupt:]
    window = gen.window.new_frames
    assert all(not f.speech for f in after[window:]), "speech continued more than one window after interrupt"
    assert session.counters.frames_emitted == len(frames)


async def test_a_client_sending_too_fast_is_refused_and_memory_stays_bounded():
    gen = PatternGenerator(new_frames=4)
    engine = Engine(gen)
    try:
        session = await engine.open_session(AVATAR, SessionSettings(max_buffer_s=1.0))
        session.push_audio(np.full(16000, 0.1, np.float32))
        with pytest.raises(AudioOverflow):
            session.push_audio(np.full(16000, 0.1, np.float32))
        assert session.counters.audio_overflows == 1
        assert session.buffered_seconds() <= 1.0
        await session.close()
    finally:
        await engine.shutdown()


async def test_offline_mode_plays_every_sample_once_as_fast_as_it_can(speech_dir):
    speech = read_wav(speech_dir / "speech_de1.wav")
    gen = PatternGenerator(new_frames=8, lookahead_frames=2)
    engine = Engine(gen)
    try:
        settings = SessionSettings(planner=PlannerSettings(realtime=False), max_buffer_s=30)
        session = await engine.open_session(AVATAR, settings)
        session.push_audio(speech)
        session.end_input()
        frames = [f async for f in session.frames()]
        await session.close()
    finally:
        await engine.shutdown()
    n = -(-speech.size // 640)
    assert len(frames) == -(-n // 8) * 8  # whole windows
    out = np.concatenate([f.audio for f in frames])
    np.testing.assert_array_equal(out[: speech.size], speech)
    assert not np.any(out[speech.size :])
    check_pairing(frames)
    assert [f.index for f in frames] == list(range(len(frames)))


async def test_a_backend_failure_closes_only_that_session_with_a_clear_error():
    gen = PatternGenerator(new_frames=4, fail_on_window=2)
    engine = Engine(gen)
    try:
        doomed = await engine.open_session(AVATAR, session_id="doomed")
        frames = await collect(doomed, 0.8)
        await asyncio.wait_for(doomed.wait_closed(), 2)
        assert doomed.error is not None and doomed.error.code == "generator_error"
        assert "out of memory" in doomed.error.message
        assert len(frames) >= 1  # it played before the failure
        gen.fail_on_window = None
        healthy = await engine.open_session(AVATAR, session_id="healthy")
        more = await collect(healthy, 0.6)
        assert len(more) >= 12 and healthy.error is None
        assert "doomed" in gen.closed and "doomed" not in engine.sessions
        await healthy.close()
    finally:
        await engine.shutdown()


async def test_two_speakers_are_mixed_and_each_has_its_own_buffer():
    gen = PatternGenerator(new_frames=4)
    engine = Engine(gen)
    try:
        settings = SessionSettings(speakers=2, planner=PlannerSettings(realtime=False))
        session = await engine.open_session(AVATAR, settings)
        a = np.full(2560, 0.25, np.float32)
        b = np.full(2560, -0.5, np.float32)
        session.push_audio(a, speaker=0)
        session.push_audio(b, speaker=1)
        with pytest.raises(ValueError, match="speaker 2 out of range"):
            session.push_audio(a, speaker=2)
        session.end_input()
        frames = [f async for f in session.frames()]
        await session.close()
    finally:
        await engine.shutdown()
    assert gen.jobs[0].audio.shape == (2, 2560)
    np.testing.assert_allclose(np.concatenate([f.audio for f in frames]), -0.25)


async def _speech_onset_after_idle(speech: np.ndarray, cut_idle: bool):
    """Idle until a long run of idle frames is queued, then a window of speech at once; return the
    generator, the session and the frames emitted around the onset."""
    gen = PatternGenerator(new_frames=20, continue_frames=3)  # 0.8 s windows: long idle queues
    engine = Engine(gen)
    try:
        session = await engine.open_session(AVATAR, SessionSettings(cut_idle=cut_idle))
        frames = []

        async def run():
            async for f in session.frames():
                frames.append(f)

        task = asyncio.create_task(run())
        while session.stats()["queued_frames"] < 14:
            await asyncio.sleep(0.005)
        session.push_audio(speech)
        while sum(f.speech for f in frames) < 20:  # the whole first speech window played
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await session.close()
    finally:
        await engine.shutdown()
    return gen, session, frames


async def test_speech_after_idle_cuts_the_unseen_idle_frames_and_continues_from_the_shown_ones(speech_dir):
    speech = read_wav(speech_dir / "speech_en1.wav")[: 16000]  # more than one 0.8 s window
    gen, session, frames = await _speech_onset_after_idle(speech, cut_idle=True)
    assert session.counters.idle_frames_cut >= 8
    onset = next(j for j in gen.jobs if j.speech)
    shown = onset.extras["continue_from"]
    assert shown.shape == (3, 24, 32, 3)
    assert onset.extras["frames_cut"] == session.counters.idle_frames_cut
    first = next(i for i, f in enumerate(frames) if f.speech)
    before = [f.image for f in frames[:first] if not f.filler][-3:]
    for seen, given in zip(before, shown, strict=True):  # the window continues from what was on screen
        np.testing.assert_array_equal(seen, given)
    assert frames[first].latency < 0.4
    check_pairing(frames)
    out = np.concatenate([f.audio for f in frames[first:]])  # speech follows at once, sample-exact
    np.testing.assert_array_equal(out[: 20 * 640], speech[: 20 * 640])
    # Only the onset window cuts: later speech windows and idle windows carry no frames to continue from.
    assert [j.index for j in gen.jobs if "continue_from" in j.extras] == [onset.index]


async def test_without_cut_idle_speech_waits_behind_the_queued_idle_frames(speech_dir):
    speech = read_wav(speech_dir / "speech_en1.wav")[: 16000]
    gen, session, frames = await _speech_onset_after_idle(speech, cut_idle=False)
    assert session.counters.idle_frames_cut == 0
    assert not any("continue_from" in j.extras for j in gen.jobs)
    first = next(f for f in frames if f.speech)
    assert first.latency >= 14 / 25 - 0.02  # behind the 14+ idle frames queued at the onset


async def test_windows_say_how_much_of_their_look_ahead_is_real_audio(speech_dir):
    speech = read_wav(speech_dir / "speech_en1.wav")[: 16000 * 2]
    gen = PatternGenerator(new_frames=4, lookahead_frames=3)
    engine = Engine(gen)
    n_look = 3 * 640
    try:
        session = await engine.open_session(AVATAR)
        collecting = asyncio.create_task(collect(session, 1.6))
        await asyncio.sleep(0.3)
        session.push_audio(speech[: 16000])  # a second at once: windows with their whole look-ahead
        await asyncio.sleep(0.5)
        session.push_audio(speech[16000 : 16000 + 5 * 640])  # then less than a window + look-ahead
        await collecting
        await session.close()
    finally:
        await engine.shutdown()
    idle = [j for j in gen.jobs if not np.any(j.audio)]
    talking = [j for j in gen.jobs if j.speech]
    assert idle and talking
    # An idle window's successor is unknown: nothing of its look-ahead is claimed to be audio.
    assert all(j.lookahead_samples == 0 for j in idle)
    assert any(j.lookahead_samples == n_look for j in talking)
    for j in gen.jobs:  # whatever is not real is zero padding
        assert j.lookahead_samples is not None and 0 <= j.lookahead_samples <= n_look
        assert not np.any(j.audio[:, j.audio.shape[1] - n_look + j.lookahead_samples:])
    # The tail had no look-ahead to wait for: it was flushed with its look-ahead marked missing.
    assert any(j.speech and j.lookahead_samples < n_look for j in gen.jobs)


class SlowOpenGenerator(PatternGenerator):
    """Takes a while to prepare a session (as a real backend encoding the avatar does)."""

    def open_session(self, session_id: str, avatar: Avatar, speakers: int = 1) -> dict:
        time.sleep(0.3)
        return super().open_session(session_id, avatar, speakers)


async def test_a_session_closed_while_it_starts_releases_the_backend_state_and_makes_no_window():
    gen = SlowOpenGenerator(new_frames=4)
    engine = Engine(gen)
    try:
        opening = asyncio.create_task(engine.open_session(AVATAR, session_id="early"))
        await asyncio.sleep(0.05)
        session = engine.sessions["early"]
        await session.close("server shutting down")  # e.g. Engine.close_all during a start
        with pytest.raises(SessionError, match="closed while it started"):
            await opening
        await asyncio.sleep(0.2)
        assert session.closed and gen.closed == ["early"] and not gen.jobs
        assert "early" not in engine.sessions
    finally:
        await engine.shutdown()
