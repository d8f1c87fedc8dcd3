"""Small parts of a session alone: the audio intake and its bound, the model side's mirror of the
pacer's queue."""

from __future__ import annotations

import numpy as np
import pytest

from streaming.audio_fifo import AudioOverflow
from streaming.audio_input import PcmFormat
from streaming.audio_intake import AudioIntake
from streaming.link import Interrupt, PlayoutReport
from streaming.output import PendingFrame
from streaming.playout_mirror import PlayoutMirror


# ------------------------------------------------------------------ audio intake
def intake(capacity: int = 1000, speakers: int = 1, accepting=lambda: True):
    sent = []
    clock = iter(range(100, 10_000)).__next__
    return AudioIntake(speakers, capacity, sent.append, accepting, lambda: float(clock())), sent


def test_intake_stamps_arrivals_and_refuses_a_push_over_the_bound_whole():
    it, sent = intake(capacity=1000)
    it.push_audio(np.zeros(600, np.float32))
    it.push_audio(np.zeros(300, np.float32), arrival=5.0)
    with pytest.raises(AudioOverflow, match="900 of 1000"):
        it.push_audio(np.zeros(101, np.float32))
    assert [c.samples.size for c in sent] == [600, 300] and sent[1].arrival == 5.0 and sent[0].arrival >= 100
    assert it.counters.samples_in == 900 and it.counters.audio_overflows == 1
    assert it.buffered_samples() == 900


def test_the_model_sides_reports_free_the_bound_and_a_stale_report_changes_nothing():
    it, sent = intake(capacity=1000)
    it.push_audio(np.zeros(900, np.float32))
    it.consumed((640,))
    assert it.buffered(0) == 260
    it.push_audio(np.zeros(700, np.float32))
    it.consumed((0,))  # late report from before: the count never goes back up
    assert it.buffered(0) == 960
    it.interrupted()  # everything buffered is gone at once, before the model side says so
    assert it.buffered_samples() == 0
    it.push_audio(np.zeros(1000, np.float32))


def test_intake_keeps_speakers_apart_checks_them_and_ignores_audio_after_close():
    open_ = [True]
    it, sent = intake(speakers=2, accepting=lambda: open_[0])
    it.push_audio(np.zeros(10, np.float32), speaker=1)
    assert (it.buffered(0), it.buffered(1)) == (0, 10)
    with pytest.raises(ValueError, match="speaker 2 out of range"):
        it.push_audio(np.zeros(10, np.float32), speaker=2)
    open_[0] = False
    it.push_audio(np.zeros(10, np.float32))
    assert len(sent) == 1


def test_end_of_input_hands_over_the_resamplers_tail_once():
    it, sent = intake(capacity=100_000)
    pcm = (np.sin(np.arange(4800) / 7) * 8000).astype(np.int16)
    it.push_audio(it.convert_pcm(pcm.tobytes(), PcmFormat(48_000)))
    tails = it.end_input()
    total = sum(c.samples.size for c in sent) + sum(c.samples.size for c in tails)
    assert tails and abs(total - 1600) <= 1  # 0.1 s at 16 kHz, nothing lost in the resampler
    assert it.buffered_samples() == total
    assert it.end_input() == ()


# ------------------------------------------------------------------ the model side's mirror
def pf(seq: int, speech: bool = False) -> PendingFrame:
    return PendingFrame(np.full((1, 1, 3), seq, np.uint8), np.zeros(640, np.float32), speech, 0, None, 0, seq)


def test_the_mirror_follows_plays_and_an_interrupt_that_crossed_frames_in_flight():
    m = PlayoutMirror()
    for seq, speech in enumerate([False, True, True, True, False]):
        m.sent(pf(seq, speech))
    m.played(PlayoutReport(0, 0))
    m.played(PlayoutReport(None, 1))  # a filler: nothing of ours was played
    assert len(m) == 4
    # The pacer had received up to seq 2 when the client interrupted: it dropped 1 and 2; 3 and 4
    # were on their way and die on arrival (their epoch ended).
    m.interrupted(Interrupt(epoch=1, received_through=2))
    assert len(m) == 0


def test_the_mirror_cuts_the_idle_tail_and_names_it_for_the_pacer_with_the_frames_to_continue_from():
    m = PlayoutMirror()
    for seq, speech in enumerate([True, False, False, False, False, False]):
        m.sent(pf(seq, speech))
    cut, shown = m.cut_idle_tail(keep=3, context=2)
    assert (cut.after_seq, cut.through_seq, cut.frames) == (2, 5, 3)
    assert [int(x[0, 0, 0]) for x in shown] == [1, 2] and len(m) == 3
    assert m.cut_idle_tail(keep=3, context=2) == (None, None)  # nothing more to cut
    m2 = PlayoutMirror()
    for seq in range(3):
        m2.sent(pf(seq, speech=True))
    assert m2.cut_idle_tail(keep=0, context=1) == (None, None)  # never a speech frame
