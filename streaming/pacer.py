"""The pacer: a session's frames out at a steady rate, each with the exact audio it was made from.

Frames made by the model side wait in a playout queue; `frames()` plays one every 1/fps seconds
on the session clock (as fast as they come when offline). When the queue runs dry it repeats the
last image with silence (a filler frame) rather than stall the timeline; when the consumer falls
more than `slip_reset_s` behind, the clock is reset (a slip) rather than burst frames to catch up.
Each frame played is reported back to the model side (`PlayoutReport`), which plans the next window
from how much video is left to play. Latency is measured here: emit time - arrival of the frame's
last input sample, both on the session clock. Transport side of a session (`streaming/link.py`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from .generator import WindowSpec
from .latency import LatencyTracker
from .link import IdleCut, Interrupt, PlayoutReport
from .output import OutputFrame, PendingFrame, PlayoutQueue
from .session_state import SessionStateMachine


@dataclass
class PacerCounters:
    frames_emitted: int = 0
    filler_frames: int = 0
    clock_slips: int = 0
    dropped_frames: int = 0  # speech frames dropped by interrupts, void frames dropped on arrival


class Pacer:
    """See the module docstring. `frames()` has a single consumer."""

    def __init__(
        self,
        spec: WindowSpec,
        machine: SessionStateMachine,
        report: Callable[[PlayoutReport], None],
        *,
        realtime: bool = True,
        slip_reset_s: float = 0.5,
        drop_input_on_interrupt: bool = False,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.spec = spec
        self.realtime = realtime
        self.slip_reset_s = slip_reset_s
        self.drop_input_on_interrupt = drop_input_on_interrupt  # generated speech: a segment's pauses too
        self.queue = PlayoutQueue()
        self.latency = LatencyTracker()
        self.counters = PacerCounters()
        self.epoch = 0
        self._machine = machine
        self._report = report
        self._clock = clock
        self._sleep = sleep
        self._received_through = -1
        self._cut: IdleCut | None = None
        self._done = False
        self._ready = asyncio.Event()
        self._silence = np.zeros(spec.samples_per_frame, np.float32)

    # ------------------------------------------------------------------ from the model side
    def accept(self, frame: PendingFrame) -> None:
        """A made frame arrives; frames of an earlier epoch (made before an interrupt), frames an idle
        cut already dropped while they were in flight, and anything after close are dropped."""
        self._received_through = max(self._received_through, frame.seq)
        if frame.epoch != self.epoch or not self._machine.live:
            self.counters.dropped_frames += 1
            return
        cut = self._cut
        if cut is not None and cut.after_seq < frame.seq <= cut.through_seq and not frame.speech:
            return  # counted by the model side as cut
        self.queue.push(frame)
        self._ready.set()

    def cut_idle(self, cut: IdleCut) -> None:
        self.queue.drop_idle_between(cut.after_seq, cut.through_seq)
        self._cut = cut

    def production_done(self) -> None:
        """Offline: no more frames will come; `frames()` ends once the queue is played."""
        self._done = True
        self._ready.set()

    # ------------------------------------------------------------------ from the session
    def interrupt(self) -> tuple[Interrupt, int]:
        """Drop the queued speech frames and void those still in flight; returns the message for the
        model side and the number of frames dropped."""
        with_input = self.drop_input_on_interrupt
        dropped = self.queue.drop_speech(with_input=with_input)
        self.counters.dropped_frames += dropped
        self.epoch += 1
        return Interrupt(self.epoch, self._received_through, with_input), dropped

    def wake(self) -> None:
        """Let a waiting consumer look at the session's state again."""
        self._ready.set()

    def close(self) -> None:
        self.queue.clear()
        self._ready.set()

    # ------------------------------------------------------------------ frames out
    async def frames(self) -> AsyncIterator[OutputFrame]:
        """Paced output: one frame per 1/fps seconds (as fast as made when offline)."""
        t0: float | None = None
        k = 0
        last_image: np.ndarray | None = None
        while True:
            if not self._machine.live:
                return
            if t0 is None or not self.realtime:
                if not await self._wait_for_frame():
                    return
                if t0 is None:
                    t0 = self._clock()
            if self.realtime:
                t0 = await self._pace(t0, k)
                if not self._machine.live:
                    return
            out = self._emit(k, last_image)
            last_image = out.image
            k += 1
            yield out

    async def _wait_for_frame(self) -> bool:
        """Until a frame is queued; False when there will be none (closed, or offline and all played)."""
        while not self.queue and not self._done:
            if not self._machine.live:
                return False
            self._ready.clear()
            await self._ready.wait()
        return bool(self.queue)

    async def _pace(self, t0: float, k: int) -> float:
        """Sleep until frame k is due; returns the clock origin (reset when the consumer slipped)."""
        due = t0 + k / self.spec.fps
        now = self._clock()
        if due > now:
            await self._sleep(due - now)
        elif now - due > self.slip_reset_s:
            t0 = now - k / self.spec.fps
            self.counters.clock_slips += 1
        return t0

    def _emit(self, k: int, last_image: np.ndarray | None) -> OutputFrame:
        """Frame k: the next made frame, or a filler when none is queued; reported to the model side."""
        pending = self.queue.pop()
        now = self._clock()
        if pending is None:
            assert last_image is not None
            out = OutputFrame(k, last_image, self._silence, False, -1, emitted_at=now, filler=True, epoch=self.epoch)
            self.counters.filler_frames += 1
        else:
            latency = now - pending.arrival if pending.arrival is not None else None
            out = OutputFrame(k, pending.image, pending.audio, pending.speech, pending.window,
                              pending.arrival, now, latency, False, pending.epoch, pending.input_pos)
            if latency is not None:
                self.latency.record_latency(latency)
            self._machine.frame_played(pending.speech)
        self.latency.record_emit(now)
        self.counters.frames_emitted += 1
        self._report(PlayoutReport(None if pending is None else pending.seq, self.counters.filler_frames))
        return out
