"""The job builder alone: the [context | window | look-ahead] layout every backend sees, arrivals, speech."""

from __future__ import annotations

import numpy as np

from streaming.audio_fifo import SpeechFifo
from streaming.generator import WindowSpec
from streaming.job_builder import JobBuilder
from streaming.planner import Decision

SPEC = WindowSpec(new_frames=2, context_frames=1, lookahead_frames=1)
SPF = SPEC.samples_per_frame  # 640


def frames_of(values: list[float]) -> np.ndarray:
    """One frame's worth of samples per value."""
    return np.repeat(np.asarray(values, np.float32), SPF)


def fifo_with(samples: np.ndarray, arrival: float = 0.0) -> SpeechFifo:
    f = SpeechFifo(100_000)
    f.push(samples, arrival)
    return f


def builder(speakers: int = 1) -> JobBuilder:
    return JobBuilder("s", SPEC, speakers, vad_threshold_db=-45.0)


def test_a_speech_window_is_context_then_the_window_taken_then_the_look_ahead_peeked():
    b = builder()
    fifo = fifo_with(frames_of([0.1, 0.2, 0.3, 0.4, 0.5]))
    first = b.build(Decision.SPEECH, [fifo]).job
    assert first.audio.shape == (1, SPEC.job_samples) == (1, 4 * SPF)
    np.testing.assert_array_equal(first.audio[0], frames_of([0.0, 0.1, 0.2, 0.3]))  # silence before the session
    assert first.lookahead_samples == SPF and (first.index, first.first_frame) == (0, 0)
    assert len(fifo) == 3 * SPF  # the look-ahead stays: it starts the next window
    second = b.build(Decision.SPEECH, [fifo]).job
    np.testing.assert_array_equal(second.audio[0], frames_of([0.2, 0.3, 0.4, 0.5]))  # context: the window before
    assert (second.index, second.first_frame) == (1, 2)


def test_an_idle_window_is_silent_takes_nothing_and_claims_no_look_ahead():
    b = builder()
    fifo = fifo_with(frames_of([0.1, 0.2, 0.3, 0.4]))
    built = b.build(Decision.IDLE, [fifo])
    assert not built.job.audio.any() and not built.job.speech
    assert built.job.lookahead_samples == 0 and built.arrivals == [None, None]
    assert len(fifo) == 4 * SPF
    after = b.build(Decision.SPEECH, [fifo]).job  # the idle window's silence is the next one's context
    np.testing.assert_array_equal(after.audio[0], frames_of([0.0, 0.1, 0.2, 0.3]))


def test_a_flushed_window_is_padded_with_silence_and_its_partial_last_frame_keeps_its_arrival():
    b = builder()
    fifo = SpeechFifo(10_000)
    fifo.push(np.full(SPF, 0.5, np.float32), arrival=1.0)
    fifo.push(np.full(SPF // 2, 0.5, np.float32), arrival=2.0)  # half a frame more, later
    built = b.build(Decision.FLUSH, [fifo])
    window = built.job.audio[0, SPF : 3 * SPF]
    assert window[: SPF + SPF // 2].min() == 0.5 and not window[SPF + SPF // 2 :].any()
    assert built.arrivals == [1.0, 2.0]
    assert built.job.lookahead_samples == 0 and len(fifo) == 0


def test_each_frame_keeps_the_latest_arrival_over_speakers_and_plays_the_speakers_mixed():
    b = builder(speakers=2)
    a = SpeechFifo(10_000)
    a.push(np.full(SPF, 0.75, np.float32), 1.0)
    a.push(np.full(2 * SPF, 0.75, np.float32), 3.0)
    c = SpeechFifo(10_000)
    c.push(np.full(3 * SPF, 0.5, np.float32), 2.0)
    built = b.build(Decision.SPEECH, [a, c])
    assert built.arrivals == [2.0, 3.0]
    assert built.job.audio.shape == (2, 4 * SPF)
    np.testing.assert_array_equal(built.frame_audio(0, SPF), np.ones(SPF, np.float32))  # 0.75 + 0.5, clipped


def test_the_speech_flag_follows_the_vad_threshold():
    b = builder()
    quiet = fifo_with(np.full(4 * SPF, 10 ** (-60 / 20), np.float32))  # -60 dBFS
    assert not b.build(Decision.SPEECH, [quiet]).job.speech
    loud = fifo_with(np.full(4 * SPF, 10 ** (-20 / 20), np.float32))
    assert b.build(Decision.SPEECH, [loud]).job.speech
