"""The model side's copy of the pacer's queue: the frames it sent and has not heard were played or dropped.

The planner needs to know how much video is left to play (`ahead_s`), and the idle cut needs the
frames that will be on screen when speech starts; both are in the pacer's queue, on the other side
of the seam (`streaming/link.py`). Rather than ask across (a round trip per window), the model side
replays on this copy what happens to the original: frames sent (`sent`), played (`played`: the
pacer reports every frame), dropped by an interrupt (`interrupted`), cut (`cut_idle_tail`, decided
here and sent over as an `IdleCut`). In one process the copy is exact; across processes it runs
ahead of the original by the frames in flight, which only makes the planner's `ahead_s` a little
larger for as long as a message takes.
"""

from __future__ import annotations

import numpy as np

from .link import IdleCut, Interrupt, PlayoutReport
from .output import PendingFrame, PlayoutQueue


class PlayoutMirror:
    """See the module docstring. Holds references to the frames sent (no copies)."""

    def __init__(self) -> None:
        self._queue = PlayoutQueue()

    def __len__(self) -> int:
        return len(self._queue)

    def seqs(self) -> list[int]:
        return self._queue.seqs()

    def sent(self, frame: PendingFrame) -> None:
        self._queue.push(frame)

    def played(self, report: PlayoutReport) -> None:
        """The pacer played up to `report.seq` (frames before it in the queue were played or dropped)."""
        if report.seq is not None:
            self._queue.drop_through(report.seq)

    def interrupted(self, msg: Interrupt) -> None:
        """The pacer dropped its speech frames up to `received_through`; later ones die on arrival."""
        self._queue.drop_speech(through_seq=msg.received_through, with_input=msg.with_input)
        self._queue.drop_after(msg.received_through)

    def cut_idle_tail(self, keep: int, context: int) -> tuple[IdleCut | None, np.ndarray | None]:
        """Drop the idle frames queued beyond the first `keep` (see `PlayoutQueue.cut_idle_tail`).

        Returns the cut for the pacer (None: nothing to cut) and the `context` frames that will be
        the last ones shown before the next window, uint8 [context, H, W, 3].
        """
        dropped, shown = self._queue.cut_idle_tail(keep, context)
        if not dropped:
            return None, None
        return IdleCut(dropped[0].seq - 1, dropped[-1].seq, len(dropped)), shown

    def clear(self) -> None:
        self._queue.clear()
