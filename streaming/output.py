"""What the engine emits: one video frame and the exact audio it was made from."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass
class OutputFrame:
    """One output frame.

    index: position on the session's output timeline (0, 1, 2, ... at `fps`); pts = index / fps.
    image: RGB uint8 [H, W, 3].
    audio: float32 [samples_per_frame] at 16 kHz, the speakers' audio mixed: exactly the audio this
        frame was generated from (silence for idle frames and filler frames).
    speech: voice activity: the frame's window had speech above the VAD threshold (not "carries input
        audio": frames in a pause carry the input's silence with speech False).
    arrival: when the last input sample of this frame's audio arrived, also when the frame is only partly
        input (the end of a flushed utterance); None when it carries no input audio.
    latency: emitted_at - arrival (None when arrival is None).
    filler: the playout buffer ran dry and this frame repeats the last image with silence.
    input_pos: speaker 0's input samples played once this frame has played (-1: a filler).
    events: playback events of generated speech due with this frame (`streaming/segments.py`), for
        the transport to send right after it.
    """

    index: int
    image: np.ndarray
    audio: np.ndarray
    speech: bool
    window: int
    arrival: float | None = None
    emitted_at: float = 0.0
    latency: float | None = None
    filler: bool = False
    epoch: int = 0
    input_pos: int = -1
    events: tuple[dict, ...] = ()


@dataclass
class PendingFrame:
    """A generated frame on its way to the pacer: what the model side of a session sends out.

    audio: float32 [samples_per_frame], the mixed input audio it was made from (plays with it).
    window: the index of the window it belongs to. arrival: see `OutputFrame`.
    epoch: the session's interrupt count when its window was submitted (older epochs are void).
    seq: its place in the order the model side sent frames (0, 1, 2, ...), so that either side can
        name frames of the other's queue (played up to, cut from, to).
    input_pos: see `OutputFrame`.
    """

    image: np.ndarray
    audio: np.ndarray
    speech: bool
    window: int
    arrival: float | None
    epoch: int
    seq: int = -1
    input_pos: int = -1


class PlayoutQueue:
    """Generated frames waiting to be played, in `seq` order. Interrupt drops the speech ones.

    The pacer plays from one; the model side keeps another as its mirror of the first (see
    `streaming/link.py`), so the operations that name frames by `seq` serve both.
    """

    def __init__(self) -> None:
        self._q: deque[PendingFrame] = deque()

    def __len__(self) -> int:
        return len(self._q)

    def push(self, f: PendingFrame) -> None:
        self._q.append(f)

    def pop(self) -> PendingFrame | None:
        return self._q.popleft() if self._q else None

    def seqs(self) -> list[int]:
        return [f.seq for f in self._q]

    def drop_speech(self, through_seq: int | None = None, with_input: bool = False) -> int:
        """Drop every queued frame of a speech window (up to `through_seq` when given); returns how many.
        with_input: also the frames that carry any input audio (the quiet ones of an utterance)."""
        def dropped(f: PendingFrame) -> bool:
            return (f.speech or (with_input and f.arrival is not None)) and (through_seq is None or f.seq <= through_seq)

        kept = deque(f for f in self._q if not dropped(f))
        dropped = len(self._q) - len(kept)
        self._q = kept
        return dropped

    def drop_through(self, seq: int) -> int:
        """Drop the frames from the head up to and including `seq` (they were played)."""
        n = 0
        while self._q and self._q[0].seq <= seq:
            self._q.popleft()
            n += 1
        return n

    def drop_after(self, seq: int) -> int:
        """Drop the frames after `seq` from the tail."""
        n = 0
        while self._q and self._q[-1].seq > seq:
            self._q.pop()
            n += 1
        return n

    def drop_idle_between(self, after_seq: int, through_seq: int) -> int:
        """Drop the idle frames with after_seq < seq <= through_seq (an idle cut); returns how many."""
        kept = deque(f for f in self._q if f.speech or not after_seq < f.seq <= through_seq)
        dropped = len(self._q) - len(kept)
        self._q = kept
        return dropped

    def cut_idle_tail(self, keep: int, context: int) -> tuple[list[PendingFrame], np.ndarray | None]:
        """Drop trailing idle frames beyond the first `keep` (never a speech frame, never below `context`).

        Returns (the frames dropped, oldest first; the `context` frames that are now the last in the
        queue as uint8 [context, H, W, 3]); ([], None) when nothing was dropped.
        """
        keep = max(keep, context)
        dropped: list[PendingFrame] = []
        while len(self._q) > keep and not self._q[-1].speech:
            dropped.append(self._q.pop())
        dropped.reverse()
        if not dropped or context == 0 or len(self._q) < context:
            return dropped, None
        tail = [self._q[i].image for i in range(len(self._q) - context, len(self._q))]
        return dropped, np.stack(tail)

    def clear(self) -> int:
        n = len(self._q)
        self._q.clear()
        return n
