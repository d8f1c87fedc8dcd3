"""The model side's segment clips (streaming/segment_clips.py) on a real SpeechFifo: positions on the
window timeline, long segments cut into blocks, growing segments, stalls, and the memory it keeps."""

from __future__ import annotations

import numpy as np

from streaming.audio_fifo import SpeechFifo
from streaming.segment_clips import SegmentClipRecorder

W = 1000  # window samples in these tests


def _push(rec: SegmentClipRecorder, fifo: SpeechFifo, x: np.ndarray) -> None:
    rec.pushed(fifo.consumed + len(fifo), x.size)
    fifo.push(x, 0.0)


def _window(rec: SegmentClipRecorder, fifo: SpeechFifo, first_sample: int, n: int = W):
    before = fifo.consumed
    taken = fifo.take(n)
    return rec.clips(first_sample, before, taken, min(len(fifo), 200), fifo)


def test_a_long_segment_comes_as_blocks_of_its_known_audio_placed_on_the_window_timeline():
    rec, fifo = SegmentClipRecorder(block_samples=2500, reach_samples=300), SpeechFifo(100_000)
    x = np.arange(1, 6001, dtype=np.float32)
    _push(rec, fifo, x)
    rec.ended(fifo.consumed + len(fifo))
    clips = _window(rec, fifo, first_sample=4000)  # idle windows before: input 0 plays at session 4000
    assert [(c.key, c.start, c.samples.size, c.complete) for c in clips] == [((0, 4000), 4000, 2500, True)]
    np.testing.assert_array_equal(clips[0].samples, x[:2500])
    _window(rec, fifo, 5000)
    clips = _window(rec, fifo, 6000)  # takes [2000, 3000): blocks 0 and 1, both known in full
    assert [(c.start, c.samples.size) for c in clips] == [(4000, 2500), (6500, 2500)]
    np.testing.assert_array_equal(clips[1].samples, x[2500:5000])
    for first in (7000, 8000):
        clips = _window(rec, fifo, first)
    assert [(c.start, c.samples.size, c.complete) for c in clips] == [(6500, 2500, True), (9000, 1000, True)]
    assert rec._kept.size <= 2500 + W  # taken audio kept: the blocks still read, no more


def test_a_segment_still_arriving_grows_and_is_complete_once_its_end_is_in():
    rec, fifo = SegmentClipRecorder(block_samples=10_000, reach_samples=0), SpeechFifo(100_000)
    x = np.random.default_rng(0).standard_normal(4000).astype(np.float32)
    _push(rec, fifo, x[:1500])
    (c,) = _window(rec, fifo, 0)
    assert (c.samples.size, c.complete) == (1500, False)
    _push(rec, fifo, x[1500:])
    rec.ended(fifo.consumed + len(fifo))
    (c,) = _window(rec, fifo, W)
    assert (c.key, c.samples.size, c.complete) == ((0, 0), 4000, True)
    np.testing.assert_array_equal(c.samples, x)


def test_back_to_back_segments_and_a_stall_padding_a_segment_split_the_clips():
    rec, fifo = SegmentClipRecorder(block_samples=10_000, reach_samples=0), SpeechFifo(100_000)
    a, b = np.ones(1300, np.float32), np.full(3000, 2.0, np.float32)
    _push(rec, fifo, a)
    rec.ended(fifo.consumed + len(fifo))
    _push(rec, fifo, b)  # the next segment, in the same window as a's tail
    _window(rec, fifo, 0)
    clips = _window(rec, fifo, W)
    assert [(c.key, c.start, c.samples.size) for c in clips] == [((0, 0), 0, 1300), ((1, 1300), 1300, 3000)]
    # The TTS stalls: the next window took only 500 samples (the rest padding), then more of b came.
    _window(rec, fifo, 2 * W, n=500)
    _push(rec, fifo, np.full(800, 3.0, np.float32))
    clips = _window(rec, fifo, 3 * W)  # input 2500 now plays at session 3000: a new clip from there
    assert [(c.key, c.start, c.samples.size) for c in clips] == [((1, 3000), 3000, 1800 + 800)]
    np.testing.assert_array_equal(clips[0].samples, np.concatenate([b[1200:], np.full(800, 3.0, np.float32)]))
    fifo.clear()
    rec.interrupted()
    _push(rec, fifo, np.ones(10, np.float32))
    (c,) = _window(rec, fifo, 4 * W)
    assert c.key == (2, 4000) and c.samples.size == 10
