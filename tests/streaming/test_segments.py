"""Segments of generated speech: playback events from played input positions; the planner's rule for them;
the idle cut at speech onset."""

import asyncio

import numpy as np

from streaming.engine import Engine
from streaming.generator import Avatar, WindowSpec
from streaming.planner import Decision, PlannerInput, WindowPlanner
from streaming.segments import SegmentTracker
from streaming.session import SessionSettings

from ..helpers.engine_runs import read_wav
from ..helpers.pattern_backend import PatternGenerator

AVATAR = Avatar("test", np.zeros((1, 24, 32, 3), np.uint8))


def _kinds(events):
    return [(e["type"], e["segment"]) for e in events]


def test_each_segment_starts_when_its_first_sample_plays_and_finishes_when_its_last_does():
    t = SegmentTracker()
    t.audio(0)
    t.audio(640)  # more audio of the same open segment
    assert t.end(1600)
    t.audio(1600)  # the next segment follows at once
    assert t.played(0) == ()  # an idle frame before any input
    assert _kinds(t.played(640)) == [("playback_started", 0)]
    assert t.played(-1) == ()  # a filler changes nothing
    events = t.played(1920)  # a frame spanning the boundary: finished 0, started 1
    assert _kinds(events) == [("playback_finished", 0), ("playback_started", 1)]
    assert events[0]["position_samples"] == 1600 and events[0]["interrupted"] is False
    assert t.unfinished == 1
    assert t.end(3200) and not t.end(3200)  # nothing open: a second marker ends nothing
    (done,) = t.played(3200)
    assert done["type"] == "playback_finished" and done["position_s"] == 0.1 and t.unfinished == 0


def test_an_interrupt_finishes_every_unfinished_segment_at_the_position_played_with_the_next_frame():
    t = SegmentTracker()
    t.audio(0)
    t.end(16000)
    t.audio(16000)
    t.played(4000)
    t.interrupted()
    assert t.unfinished == 0
    events = t.played(-1)
    assert [(e["segment"], e["position_samples"], e["interrupted"]) for e in events] == [(0, 4000, True), (1, 0, True)]
    t.audio(40000)  # speech after the interrupt is a new segment, numbered on
    assert _kinds(t.played(40640)) == [("playback_started", 2)]


def _input(**kw) -> PlannerInput:
    base = dict(fill_samples=1000, ahead_s=0.15, compute_s=0.05, previous_took_speech=True, oldest_wait_s=1.0,
                input_idle_s=5.0)
    return PlannerInput(**{**base, **kw})


def test_a_pause_in_generated_speech_is_not_its_end_but_a_spent_margin_still_pads():
    planner = WindowPlanner(WindowSpec(new_frames=4, fps=25, context_frames=0, lookahead_frames=1))
    assert planner.decide(_input()) is Decision.FLUSH  # live: the client stopped sending, pad the tail
    assert planner.decide(_input(generated=True)) is Decision.WAIT  # generated: the rest is coming
    assert planner.wait_s(_input(generated=True)) > 0
    assert planner.decide(_input(generated=True, ahead_s=0.04)) is Decision.FLUSH  # else the video stalls
    assert planner.decide(_input(generated=True, input_ended=True)) is Decision.FLUSH  # the segment ended


async def _onset(generated: bool, speech_dir) -> tuple[int, list]:
    """A session idles 0.6 s, then 1 s of speech arrives at once: (idle frames cut, frames played)."""
    gen = PatternGenerator(new_frames=8, delay_s=0.02)  # cannot continue from the frames shown; ~0.16 s a window
    engine = Engine(gen)
    frames: list = []
    try:
        settings = SessionSettings(generated_speech=generated, max_buffer_s=60.0) if generated else SessionSettings()
        session = await engine.open_session(AVATAR, settings)

        async def play():
            async for f in session.frames():
                frames.append(f)

        player = asyncio.create_task(play())
        await asyncio.sleep(0.6)
        session.push_audio(read_wav(speech_dir / "speech_en1.wav")[:16000])
        if generated:
            assert session.end_segment()
        await asyncio.sleep(1.6)
        cut = session.counters.idle_frames_cut
        player.cancel()
        await asyncio.gather(player, return_exceptions=True)
        await session.close()
    finally:
        await engine.shutdown()
    return cut, frames


async def test_generated_speech_cuts_the_idle_video_queued_before_it_with_any_backend(speech_dir):
    cut, frames = await _onset(True, speech_dir)
    assert cut > 0
    events = [e for f in frames for e in f.events]
    assert [e["type"] for e in events] == ["playback_started", "playback_finished"]
    assert events[1]["position_samples"] == 16000 and not events[1]["interrupted"]
    live_cut, live_frames = await _onset(False, speech_dir)
    assert live_cut == 0  # a live session keeps today's behaviour with this backend
    assert all(f.events == () for f in live_frames)
