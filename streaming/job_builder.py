"""Turns the planner's decision into one window of work: the audio layout every backend sees.

`WindowJob.audio` is [speakers, context | window | look-ahead] (`WindowSpec`): the left context is
the audio of the windows before (silence before the session began), the window is taken from the
speech buffers (a flushed window is padded with silence; an idle one is all silence), and the
look-ahead is peeked, not taken: it comes again as the start of the next window. An idle window's
successor is not known yet, so its look-ahead is left unknown (zeros, `lookahead_samples == 0`)
rather than guessed. Each new frame keeps the arrival of its last input sample (the latest over
speakers), which is what its latency is measured from, and the input position it plays through
(speaker 0's samples taken so far, counted like the intake counts them), which is how the transport
side knows which segment of generated speech a frame belongs to. Model side of a session.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .audio_fifo import SpeechFifo
from .generator import WindowJob, WindowSpec
from .planner import Decision, has_voice


@dataclass
class BuiltWindow:
    """A job, and what its frames are played with: the speakers' window audio mixed, and arrivals."""

    job: WindowJob
    decision: Decision
    mixed: np.ndarray  # float32 [window_samples], the speakers summed and clipped
    arrivals: list[float | None]  # per new frame: when its last input sample arrived (None: no input)
    positions: list[int]  # per new frame: speaker 0's input samples played once it has played
    input_start: int = 0  # speaker 0's input sample where the window's audio begins
    lookahead_taken: int = 0  # samples of look-ahead peeked after the window (speaker 0)

    def frame_audio(self, i: int, samples_per_frame: int) -> np.ndarray:
        return self.mixed[i * samples_per_frame : (i + 1) * samples_per_frame]


class JobBuilder:
    """Keeps the audio history (left context) and the window count of one session."""

    def __init__(self, session_id: str, spec: WindowSpec, speakers: int, vad_threshold_db: float) -> None:
        self.session_id = session_id
        self.spec = spec
        self.vad_threshold_db = vad_threshold_db
        self.window_index = 0
        self._history = np.zeros((speakers, spec.context_frames * spec.samples_per_frame), np.float32)

    def build(self, decision: Decision, fifos: Sequence[SpeechFifo]) -> BuiltWindow:
        """Take the window's audio out of `fifos` (none for an IDLE decision) and lay out the job."""
        spec = self.spec
        before = fifos[0].consumed
        window, look, look_real, arrivals = self._take(decision, fifos)
        taken = fifos[0].consumed - before
        spf = spec.samples_per_frame
        positions = [before + min((f + 1) * spf, taken) for f in range(spec.new_frames)]
        audio = np.concatenate([self._history, window, look], axis=1)
        if self._history.shape[1]:
            self._history = np.concatenate([self._history, window], axis=1)[:, -self._history.shape[1] :]
        speech = decision is not Decision.IDLE and has_voice(window, self.vad_threshold_db, spec.samples_per_frame)
        index = self.window_index
        self.window_index += 1
        job = WindowJob(self.session_id, index, index * spec.new_frames, audio, speech, lookahead_samples=look_real)
        return BuiltWindow(job, decision, np.clip(window.sum(axis=0), -1.0, 1.0), arrivals, positions, before, look_real)

    def _take(self, decision: Decision, fifos: Sequence[SpeechFifo]
              ) -> tuple[np.ndarray, np.ndarray, int, list[float | None]]:
        """(window [speakers, window_samples], look-ahead [speakers, n_look], real look-ahead samples,
        arrivals per new frame)."""
        spec = self.spec
        n_look = spec.lookahead_frames * spec.samples_per_frame
        window = np.zeros((len(fifos), spec.window_samples), np.float32)
        look = np.zeros((len(fifos), n_look), np.float32)
        look_real = n_look
        arrivals: list[float | None] = [None] * spec.new_frames
        for s, fifo in enumerate(fifos):
            if decision is not Decision.IDLE:
                self._note_arrivals(fifo, arrivals)
                taken = fifo.take(spec.window_samples)
                window[s, : taken.size] = taken
            ahead = fifo.peek(n_look) if decision is not Decision.IDLE else np.zeros(0, np.float32)
            look[s, : ahead.size] = ahead
            look_real = min(look_real, ahead.size)
        return window, look, look_real, arrivals

    def _note_arrivals(self, fifo: SpeechFifo, arrivals: list[float | None]) -> None:
        """Per new frame, the latest arrival of its last input sample so far (before the window is taken)."""
        spf = self.spec.samples_per_frame
        held = len(fifo)
        for f in range(min(self.spec.new_frames, -(-held // spf))):
            # The frame's last input sample: a flushed window's last real frame may be partial.
            t = fifo.arrival_of(min((f + 1) * spf, held) - 1)
            if t is not None and (arrivals[f] is None or t > arrivals[f]):
                arrivals[f] = t
