"""Segments of generated speech: playback events from played input positions; the planner's rule for them."""

from streaming.generator import WindowSpec
from streaming.planner import Decision, PlannerInput, WindowPlanner
from streaming.segments import SegmentTracker


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
