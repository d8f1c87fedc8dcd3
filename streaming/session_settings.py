"""What a session is configured with, the states it goes through, and what it counts."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .planner import PlannerSettings
from .quality import QualitySettings

MAX_SPEAKERS = 4


class SessionState(str, enum.Enum):
    STARTING = "starting"
    IDLE = "idle"
    SPEAKING = "speaking"
    INTERRUPTED = "interrupted"
    CLOSING = "closing"
    CLOSED = "closed"


class SessionError(RuntimeError):
    """A session-level failure with a machine-readable code (e.g. "generator_error")."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class SessionSettings:
    """speakers: audio inputs (1..4). max_buffer_s: speech buffered per speaker before the client is
    refused (AudioOverflow). vad_threshold_db: windows quieter than this count as idle.
    initial_compute_s: window compute estimate before the first window was measured.
    slip_reset_s: if the consumer falls this far behind the clock, the clock is reset instead of
    bursting frames to catch up.
    cut_idle: when speech starts, drop the queued idle frames nobody has seen yet (keeping those that
    play while the speech window is made), so speech is not delayed behind them; only with backends
    that can continue from the frames shown (`ContinuingGenerator`) or with generated speech (any
    backend), and only in real time.
    generated_speech: the input is generated speech (a TTS engine: audio faster than real time, in
    segments with end markers, docs/agents.md) rather than a live microphone: `max_buffer_s` is then
    minutes, a window short of speech is padded only at a segment's end or when the video would
    stall, and the transport side reports each segment's playback (`streaming/segments.py`). One
    speaker only (an agent has one voice).
    """

    speakers: int = 1
    max_buffer_s: float = 10.0
    planner: PlannerSettings = field(default_factory=PlannerSettings)
    vad_threshold_db: float = -45.0
    initial_compute_s: float = 0.25
    slip_reset_s: float = 0.5
    cut_idle: bool = True
    quality: QualitySettings = field(default_factory=QualitySettings)
    generated_speech: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.speakers <= MAX_SPEAKERS:
            raise ValueError(f"speakers must be 1..{MAX_SPEAKERS}, got {self.speakers}")
        if self.max_buffer_s <= 0:
            raise ValueError("max_buffer_s must be > 0")
        if self.generated_speech and self.speakers != 1:
            raise ValueError("generated speech has one speaker")


@dataclass
class SessionCounters:
    frames_emitted: int = 0
    filler_frames: int = 0
    dropped_frames: int = 0
    clock_slips: int = 0
    windows_speech: int = 0
    windows_flush: int = 0
    windows_idle: int = 0
    windows_cancelled: int = 0
    idle_frames_cut: int = 0
    audio_overflows: int = 0
    samples_in: int = 0
