"""Generated speech: each segment's known audio, attached to the windows that play it.

A TTS engine sends a whole utterance (a segment) faster than real time, so when a window runs, the
rest of its segment is usually buffered already. A backend can then compute speech features over
the segment as the reference does offline over a whole clip, instead of the live approximation
(docs/live_features.md, "Generated speech"). This module is the model side's half: it follows where
segments start and end in the speech buffer and hands each window the audio of the segments it
plays, as `SegmentClip`s in `job.extras[SEGMENT_CLIPS]` (plain data: a number, a position, samples).

Where a segment is on the window timeline: frame f plays session samples [f*spf, (f+1)*spf); a
window that took input samples from `before` starts at session sample first_frame*spf, so input
sample i sits at i + (first_frame*spf - before) while windows take whole windows of audio. A window
padded with silence, or an idle window, shifts that offset: the audio after it is a new clip (a
segment that stalled mid-way is two clips). A segment may start anywhere, mid-frame included.

Bounds: a clip is at most `block_samples` long (a longer segment is cut into blocks, each a clip of
its own, aligned to the segment's start), so a backend's cost per window and its cache stay bounded;
the recorder keeps the taken audio of the blocks still in use (at most a block and a window).
While a segment is still arriving, its last block is the part known so far (`complete` False) and
grows from window to window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .audio_fifo import SpeechFifo

SEGMENT_CLIPS = "segment_clips"
"""`WindowJob.extras` key: tuple[SegmentClip, ...], the known audio of the segments a window plays."""


@dataclass(frozen=True)
class SegmentClip:
    """Known audio of one segment (or one block of a long one) on the window timeline.

    key: (segment number, start) - equal keys are the same clip, possibly grown since.
    start: session sample where samples[0] plays (frame f plays [f*spf, (f+1)*spf)).
    samples: float32 16 kHz mono, from the clip's start through the last sample known.
    complete: every sample of the clip is known (the segment ended, or the block is full).
    """

    key: tuple[int, int]
    start: int
    samples: np.ndarray
    complete: bool


@dataclass
class _Segment:
    number: int
    start: int  # input sample (speaker 0's buffer, counted from the session's start)
    end: int | None = None


class SegmentClipRecorder:
    """Per session, model side. Fed with pushes, end markers, interrupts and the windows built.

    block_samples: the longest clip. reach_samples: how far before a window's first sample its
    features may read (a backend's motion frames and audio window), so the clip playing there is
    attached too.
    """

    def __init__(self, block_samples: int, reach_samples: int) -> None:
        if block_samples < 1:
            raise ValueError("block_samples must be >= 1")
        self.block = block_samples
        self.reach = max(0, reach_samples)
        self._segments: list[_Segment] = []
        self._count = 0
        self._open = False
        self._kept = np.zeros(0, np.float32)  # taken audio, input samples [kept_from, kept_from + size)
        self._kept_from = 0
        self._offset: int | None = None  # session sample - input sample in the current run
        self._run_start = 0

    @property
    def segments_started(self) -> int:
        return self._count

    def pushed(self, write_pos: int, samples: int) -> None:
        """`samples` were appended at input sample `write_pos`: they open a segment unless one is open."""
        if samples and not self._open:
            self._segments.append(_Segment(self._count, write_pos))
            self._count += 1
            self._open = True

    def ended(self, write_pos: int) -> None:
        """End of input (the client's segment end): the open segment ends at `write_pos`."""
        if self._open:
            self._segments[-1].end = write_pos
            self._open = False

    def interrupted(self) -> None:
        """The buffer was dropped: its segments are gone; the next audio opens a new one."""
        self._segments.clear()
        self._open = False
        self._kept = np.zeros(0, np.float32)
        self._offset = None

    def clips(self, first_sample: int, before: int, taken: np.ndarray, look: int,
              fifo: SpeechFifo) -> tuple[SegmentClip, ...]:
        """A window was built: it plays from session sample `first_sample`, took `taken` (speaker 0)
        from input sample `before`, and peeked `look` samples after it. Returns the clips it plays."""
        offset = first_sample - before
        if offset != self._offset or taken.size < 1:
            self._offset, self._run_start = offset, before
        if self._kept_from + self._kept.size != before:
            self._kept, self._kept_from = np.zeros(0, np.float32), before
        self._kept = np.concatenate([self._kept, np.asarray(taken, np.float32)])
        write = fifo.consumed + len(fifo)
        lo, hi = max(self._run_start, before - self.reach), before + taken.size + look
        out: list[SegmentClip] = []
        for seg in self._segments:
            s0 = max(seg.start, self._run_start)
            s1 = min(seg.end if seg.end is not None else write, write)
            if s1 <= max(lo, s0) or s0 >= hi or taken.size < 1:
                continue
            b = s0 + (max(lo, s0) - s0) // self.block * self.block
            while b < min(s1, hi):
                b1 = min(b + self.block, s1)
                complete = b + self.block <= s1 or seg.end is not None
                out.append(SegmentClip((seg.number, b + offset), b + offset, self._audio(b, b1, fifo), complete))
                b += self.block
        self._forget(min([c.start - offset for c in out], default=lo))
        return tuple(out)

    def _audio(self, b: int, b1: int, fifo: SpeechFifo) -> np.ndarray:
        """Input samples [b, b1) from the kept taken audio and the buffer."""
        kept_end = self._kept_from + self._kept.size
        parts = [self._kept[max(0, b - self._kept_from):max(0, min(b1, kept_end) - self._kept_from)]]
        if b1 > kept_end:
            ahead = fifo.peek(b1 - fifo.consumed)
            parts.append(ahead[max(0, b - fifo.consumed):])
        return np.concatenate(parts)

    def _forget(self, keep_from: int) -> None:
        """Drop taken audio before `keep_from` and segments that ended before it."""
        drop = min(max(0, keep_from - self._kept_from), self._kept.size)
        if drop:
            self._kept, self._kept_from = self._kept[drop:].copy(), self._kept_from + drop
        self._segments = [s for s in self._segments if s.end is None or s.end > keep_from]
