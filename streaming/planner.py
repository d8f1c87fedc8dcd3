"""Decides, per session, when the next window is made and from what audio. Pure logic, no clocks.

The output timeline never stops: the pacer plays frames at a steady rate, so a new window must be
ready before the playout buffer runs dry. The rules, in order:

1. Never more than `max_ahead_s` of video produced ahead of playout (bounds memory; a client
   sending faster than real time then fills its speech buffer and is told so).
2. A full window of speech (plus the backend's look-ahead) is waiting -> make a SPEECH window now.
3. The playout buffer will run dry within (compute estimate + margin):
   - mid-utterance (the previous window took speech) or speech that has waited a whole window
     already (the client stopped sending) -> FLUSH: take the speech there is and pad with silence;
     but padding puts silence into the middle of the client's audio, so a window short of speech
     is padded only when the client has stopped sending (no audio for `margin_s`) or the margin
     is spent (`ahead_s <= compute_s`); until then the planner WAITs for the rest, which a
     real-time client sends within its jitter (at 48 kHz the buffer always sits 16 samples, the
     resampler's delay, short of a message boundary, so one late message left a window 16
     samples short: issue 13). A whole window with part of its look-ahead is not padding.
   - otherwise -> IDLE: a silent window. Speech that just started waits for a full window, so an
     utterance is never cut by padding at its start; this costs at most one window of latency.
   Generated speech (a TTS engine sends faster than real time, in bursts, and marks each segment's
   end) never counts as stopped because nothing came for a while: mid-segment, a short window is
   padded only when the margin is spent; the segment's end marker flushes its tail.
   When the session can cut queued idle frames at speech onset (`can_cut_idle`: the backend can
   continue from the frames shown), speech after idle is not flushed early: it waits for its full
   window and look-ahead (rule 2), and the idle video queued meanwhile is cut, so the onset latency
   is one window + look-ahead + compute whatever the phase of the idle windows, with real look-ahead.
4. Otherwise wait.

Offline (not real time) there is no deadline: windows are made as soon as audio is there, and
the tail is flushed when the input ends.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np

from .generator import SAMPLE_RATE, WindowSpec


class Decision(enum.Enum):
    WAIT = "wait"
    SPEECH = "speech"
    FLUSH = "flush"
    IDLE = "idle"


@dataclass(frozen=True)
class PlannerSettings:
    """margin_s: safety margin before the playout buffer would run dry (absorbs network jitter).
    max_ahead_s: most video produced ahead of playout; None -> two windows plus the margin.
    realtime: False for offline rendering (no deadlines, no idle windows).
    """

    margin_s: float = 0.12
    max_ahead_s: float | None = None
    realtime: bool = True

    def __post_init__(self) -> None:
        if self.margin_s < 0:
            raise ValueError("margin_s must be >= 0")
        if self.max_ahead_s is not None and self.max_ahead_s <= 0:
            raise ValueError("max_ahead_s must be > 0")


@dataclass(frozen=True)
class PlannerInput:
    """fill_samples: speech samples waiting (the fullest speaker's buffer).
    ahead_s: seconds of produced video not yet played.
    compute_s: current estimate of the time to make one window.
    previous_took_speech: the last window scheduled took audio from the buffer (mid-utterance).
    oldest_wait_s: how long the oldest buffered sample has been waiting.
    input_ended: the client said no more audio is coming.
    can_cut_idle: speech after idle may cut the queued idle frames (see the module docstring).
    input_idle_s: how long since audio last arrived (inf: never); at least `margin_s` means the
        client stopped sending, so a short window may be padded with silence (rule 3).
    generated: generated speech (see the module docstring): a pause in the input is not its end.
    """

    fill_samples: int
    ahead_s: float
    compute_s: float
    previous_took_speech: bool
    oldest_wait_s: float = 0.0
    input_ended: bool = False
    can_cut_idle: bool = False
    input_idle_s: float = math.inf
    generated: bool = False


class WindowPlanner:
    def __init__(self, spec: WindowSpec, settings: PlannerSettings | None = None) -> None:
        self.spec = spec
        self.settings = settings or PlannerSettings()

    @property
    def samples_needed(self) -> int:
        """Speech samples that must be buffered before a full window can be made."""
        return self.spec.window_samples + self.spec.lookahead_frames * self.spec.samples_per_frame

    @property
    def max_ahead_s(self) -> float:
        s = self.settings
        return s.max_ahead_s if s.max_ahead_s is not None else 2 * self.spec.window_seconds + s.margin_s

    def deadline_in(self, p: PlannerInput) -> float:
        """Seconds until a window must be started so the playout buffer does not run dry."""
        return p.ahead_s - (p.compute_s + self.settings.margin_s)

    def may_pad(self, p: PlannerInput) -> bool:
        """Rule 3: silence may complete a window only once the client stopped or the margin is spent."""
        stopped = p.input_idle_s >= self.settings.margin_s and not p.generated
        return stopped or p.ahead_s <= p.compute_s

    def wait_s(self, p: PlannerInput) -> float:
        """How long a WAIT may last unless audio arrives or a frame is played (both wake the planner)."""
        soft = self.deadline_in(p)
        if soft > 0:
            return soft
        # Past the deadline, waiting for the rest of a window: until the client counts as stopped
        # or the margin is spent.
        if p.generated:
            return max(0.0, p.ahead_s - p.compute_s)
        return max(0.0, min(self.settings.margin_s - p.input_idle_s, p.ahead_s - p.compute_s))

    def stall_s(self, p: PlannerInput) -> float:
        """How long speech may wait before it is flushed without a full window (the client stopped)."""
        if p.can_cut_idle and not p.previous_took_speech:  # onset: wait for the full window + look-ahead
            return self.samples_needed / SAMPLE_RATE + self.settings.margin_s
        return self.spec.window_seconds

    def decide(self, p: PlannerInput) -> Decision:
        if p.ahead_s >= self.max_ahead_s:
            return Decision.WAIT
        if p.fill_samples >= self.samples_needed:
            return Decision.SPEECH
        if p.input_ended and p.fill_samples > 0:
            return Decision.FLUSH
        if not self.settings.realtime:
            return Decision.WAIT
        if self.deadline_in(p) <= 0:
            stalled = p.oldest_wait_s >= self.stall_s(p)
            if p.fill_samples > 0 and (p.previous_took_speech or stalled):
                if p.fill_samples >= self.spec.window_samples or self.may_pad(p):
                    return Decision.FLUSH
                return Decision.WAIT
            return Decision.IDLE
        return Decision.WAIT


def loudness_dbfs(samples: np.ndarray) -> float:
    """RMS level in dB relative to full scale (-inf for digital silence)."""
    if samples.size == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")


def has_voice(samples: np.ndarray, threshold_db: float, frame_samples: int) -> bool:
    """A simple energy VAD: any frame-sized slice louder than `threshold_db` dBFS."""
    if samples.ndim == 2:
        return any(has_voice(row, threshold_db, frame_samples) for row in samples)
    flat = samples.reshape(-1)
    n = flat.size // frame_samples
    if n == 0:
        return loudness_dbfs(flat) > threshold_db
    frames = flat[: n * frame_samples].reshape(n, frame_samples).astype(np.float64)
    rms = np.sqrt(np.mean(frames * frames, axis=1))
    return bool(np.any(rms > 10 ** (threshold_db / 20.0)))
