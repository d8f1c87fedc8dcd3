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


@dataclass
class PendingFrame:
    """A generated frame waiting in the playout queue."""

    image: np.ndarray
    audio: np.ndarray
    speech: bool
    window: int
    arrival: float | None
    epoch: int


class PlayoutQueue:
    """Generated frames waiting to be played, in order. Interrupt drops the speech ones."""

    def __init__(self) -> None:
        self._q: deque[PendingFrame] = deque()

    def __len__(self) -> int:
        return len(self._q)

    def push(self, f: PendingFrame) -> None:
        self._q.append(f)

    def pop(self) -> PendingFrame | None:
        return self._q.popleft() if self._q else None

    def drop_speech(self) -> int:
        """Drop every queued frame of a speech window; returns how many were dropped."""
        kept = deque(f for f in self._q if not f.speech)
        dropped = len(self._q) - len(kept)
        self._q = kept
        return dropped

    def cut_idle_tail(self, keep: int, context: int) -> tuple[int, np.ndarray | None]:
        """Drop trailing idle frames beyond the first `keep` (never a speech frame, never below `context`).

        Returns (frames dropped, the `context` frames that are now the last in the queue as uint8
        [context, H, W, 3]); (0, None) when nothing was dropped.
        """
        keep = max(keep, context)
        dropped = 0
        while len(self._q) > keep and not self._q[-1].speech:
            self._q.pop()
            dropped += 1
        if not dropped or len(self._q) < context:
            return dropped, None
        tail = [self._q[i].image for i in range(len(self._q) - context, len(self._q))]
        return dropped, np.stack(tail)

    def clear(self) -> int:
        n = len(self._q)
        self._q.clear()
        return n
