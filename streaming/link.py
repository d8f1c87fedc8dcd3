"""The seam inside a session: what crosses between its transport side and its model side.

A session is two halves (docs/architecture.md):

- the transport side stays where the client is connected (a gateway, in a cluster): `AudioIntake`
  (any-rate audio -> 16 kHz chunks stamped with their arrival), the `Pacer` (the playout queue,
  frames at a steady rate with their exact audio, fillers, latency) and the `SessionStateMachine`;
- the model side runs where the model is (a worker): `WindowProduction` (speech buffers, the planner,
  the job builder, the compute estimate, adaptive quality) driving the `GeneratorWorker`.

In one process the halves call each other directly. Across a process boundary (the cluster issue:
a Ray actor per worker) each call below is a one-way message, so every argument is plain data
(numbers, numpy arrays, small dataclasses) and no call waits for an answer from the other side:

    transport -> model  `ProductionInput`:  audio chunks, end of input, interrupts, playout reports
    model -> transport  `ProductionOutput`: frames with their audio, idle cuts, audio consumed, done/failed

Lifecycle (`start`, `close`) and `stats()` are the only calls that return something; they are
rare (once per session, or twice a second), so a remote call for them is fine.

Frames are named by `seq` (the order the model side sent them). The model side keeps a mirror of
the pacer's queue (the frames it sent that it has not heard were played or dropped), which gives the
planner its `ahead_s` and the idle cut its frames without asking across; the pacer's reports keep the
mirror in step, and messages between the halves are taken in the order they were sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .output import PendingFrame
from .session_settings import SessionError


@dataclass(frozen=True)
class AudioChunk:
    """Speech for one speaker: float32 16 kHz mono samples and when they arrived (the session clock).

    The model side uses `arrival` for how long speech has waited and hands it back with the frames
    made from it, so the pacer measures latency on the clock that stamped it.
    """

    speaker: int
    samples: np.ndarray
    arrival: float


@dataclass(frozen=True)
class PlayoutReport:
    """The pacer emitted one frame: `seq` of the made frame it played (None: a filler frame), and its
    running count of filler frames (adaptive quality lowers itself on new fillers)."""

    seq: int | None
    fillers: int


@dataclass(frozen=True)
class Interrupt:
    """The client interrupted: speech buffered on the model side is dropped and frames of earlier
    epochs are void. `received_through`: the last `seq` the pacer had received when it dropped its
    queued speech frames (-1: none); later frames were in flight and are dropped when they land.
    with_input: the frames dropped were those carrying any input audio, not only speech windows'
    (generated speech: the rest of the segment goes, its pauses too)."""

    epoch: int
    received_through: int
    with_input: bool = False


@dataclass(frozen=True)
class IdleCut:
    """Speech starts after idle: the pacer drops the idle frames with after_seq < seq <= through_seq
    (queued ones, and any still in flight) so speech is not delayed behind them; `frames` of them."""

    after_seq: int
    through_seq: int
    frames: int


@dataclass(frozen=True)
class ProductionStats:
    """The model side's figures for `Session.stats()` (a snapshot)."""

    window_compute_s: float
    quality: dict[str, Any] | None
    windows_speech: int = 0
    windows_flush: int = 0
    windows_idle: int = 0
    windows_cancelled: int = 0
    idle_frames_cut: int = 0
    dropped_frames: int = 0


class ProductionInput(Protocol):
    """What the transport side of a session calls on its model side (`WindowProduction`)."""

    async def start(self) -> None:
        """Prepare the backend's state for the session, then begin making windows; raises SessionError."""
        ...

    def push_audio(self, chunk: AudioChunk) -> None:
        """Buffer speech (already admitted: the transport side keeps the buffer bound)."""
        ...

    def end_input(self, tails: tuple[AudioChunk, ...]) -> None:
        """No more audio for now (`tails`: the resamplers' last samples): play what is buffered."""
        ...

    def interrupt(self, msg: Interrupt) -> None:
        ...

    def played(self, report: PlayoutReport) -> None:
        ...

    def stats(self) -> ProductionStats:
        ...

    async def close(self) -> None:
        """Stop making windows and release the backend's state. Idempotent."""
        ...


class ProductionOutput(Protocol):
    """What the model side of a session calls on its transport side."""

    def frame_made(self, frame: PendingFrame) -> None:
        """A new frame, in `seq` order, with the exact audio it was made from."""
        ...

    def idle_cut(self, cut: IdleCut) -> None:
        ...

    def audio_consumed(self, consumed: tuple[int, ...]) -> None:
        """Per speaker, how many samples pushed so far have left the speech buffers (taken into a
        window or dropped by an interrupt): the transport side bounds the buffers with it."""
        ...

    def production_done(self) -> None:
        """Offline: the input ended and every window was made; no more frames will come."""
        ...

    def production_failed(self, error: SessionError) -> None:
        """Making windows failed (e.g. the backend raised): the session must close with `error`."""
        ...
