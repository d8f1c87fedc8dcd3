"""Segments of generated speech and their playback events, on the transport side of a session.

A voice agent's TTS sends each utterance as one segment: its audio, faster than real time, then an
end marker. The agent needs to know when the avatar actually started and finished saying it (to
time its turn-taking, and after a barge-in, how much of the text the user heard). Segments are
ranges of the intake's sample count (speaker 0, the one voice of generated speech); every played
frame carries the input position it plays through (`OutputFrame.input_pos`), so a segment started
when the first frame past its start plays and finished when the frame reaching its end plays. An
interrupt finishes every segment not yet finished at the position played so far.

Every segment gets exactly one `playback_finished`, and one `playback_started` before it unless it
was interrupted before any of it played. Events are plain dicts, the JSON the transports send.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from .generator import SAMPLE_RATE

Event = dict[str, Any]


@dataclass
class Segment:
    number: int  # 0, 1, 2, ... in the session
    start: int  # intake sample count where its audio begins
    end: int | None = None  # where it ends; None while the client is still sending it
    started: bool = False


def playback_started(seg: Segment) -> Event:
    return {"type": "playback_started", "segment": seg.number}


def playback_finished(seg: Segment, position: int, interrupted: bool) -> Event:
    """position: input samples played, from the segment's start."""
    return {"type": "playback_finished", "segment": seg.number, "position_s": round(position / SAMPLE_RATE, 4),
            "position_samples": position, "interrupted": interrupted}


class SegmentTracker:
    """See the module docstring. Fed by the session: audio admitted, end markers, frames played, interrupts."""

    def __init__(self) -> None:
        self._segments: deque[Segment] = deque()
        self._count = 0
        self._played = 0  # input position of the last frame played
        self._pending: list[Event] = []  # events due with the next frame (an interrupt's)

    @property
    def open_segment(self) -> Segment | None:
        """The segment the client is still sending (no end marker yet)."""
        last = self._segments[-1] if self._segments else None
        return last if last is not None and last.end is None else None

    @property
    def unfinished(self) -> int:
        """Segments whose `playback_finished` has not been reported yet (pending events count as reported)."""
        return len(self._segments)

    def audio(self, position: int) -> None:
        """Audio was admitted starting at intake sample `position`: it opens a segment unless one is open."""
        if self.open_segment is None:
            self._segments.append(Segment(self._count, position))
            self._count += 1

    def end(self, position: int) -> bool:
        """The client's end marker; `position`: the intake's count now. False when no segment was open."""
        seg = self.open_segment
        if seg is None:
            return False
        seg.end = position
        return True

    def played(self, input_pos: int) -> tuple[Event, ...]:
        """A frame played through input position `input_pos` (-1: a filler): the events due with it."""
        events, self._pending = self._pending, []
        if input_pos >= 0:
            self._played = max(self._played, input_pos)
        while self._segments:
            seg = self._segments[0]
            if not seg.started and self._played > seg.start:
                seg.started = True
                events.append(playback_started(seg))
            if seg.end is None or self._played < seg.end:
                break
            events.append(playback_finished(seg, seg.end - seg.start, False))
            self._segments.popleft()
        return tuple(events)

    def interrupted(self) -> None:
        """Every unfinished segment ends where playback is now; reported with the next frame."""
        while self._segments:
            seg = self._segments.popleft()
            reached = self._played if seg.end is None else min(self._played, seg.end)
            self._pending.append(playback_finished(seg, max(0, reached - seg.start), True))
