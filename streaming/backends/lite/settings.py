"""Settings of the `lite` CPU portrait animator (one frozen dataclass, every default explained)."""

from __future__ import annotations

from dataclasses import dataclass

from model.options import option
from model.timebase import VIDEO_FPS


@dataclass(frozen=True)
class LiteSettings:
    """Knobs of the lite backend.

    Window: 4 new frames (160 ms) per window. Latency is look-ahead + window + compute, so
    4 + 1 frames is 200 ms before compute (~3 ms a frame here). Shorter windows would save at
    most 120 ms but make the engine hand over 25-50 jobs a second per session; longer ones buy
    nothing because the lite renderer has no per-window fixed cost to amortise.

    Look-ahead: 1 frame (40 ms) so each frame's audio analysis can be centred `lead_ms` after
    the frame's own centre: real lips move slightly before the sound they make, and the lead
    also cancels the lag of the attack smoothing.
    """

    width: int = option(512, "lite: output width in pixels (smaller costs less CPU and bandwidth)",
                        flag="--lite-width")
    height: int = option(512, "lite: output height in pixels", flag="--lite-height")
    fps: int = VIDEO_FPS
    new_frames: int = 4
    lookahead_frames: int = 1
    lead_ms: float = 20.0
    """Analysis window offset after the frame centre; must fit in the look-ahead (clamped)."""

    seed: int = 0
    """Mixed with the session id: same seed + same session id + same audio -> identical frames."""

    # Mouth.
    mouth_open: float = 0.12
    """Largest lip gap as a fraction of the face box height (about 11 px for a 93 px face)."""
    level_range_db: float = 20.0
    """Loudness below the running speech level at which the mouth is closed (fully open 6 dB above it)."""
    gate_dbfs: float = -50.0
    """Frames quieter than this (absolute dBFS) count as silence."""
    attack_ms: float = 30.0
    release_ms: float = 70.0
    width_gain: float = 0.14
    """How much wide vowels (high spectral centroid) widen and rounded ones narrow the mouth."""

    # Eyes.
    blink_interval_s: tuple[float, float] = (2.0, 6.0)
    blink_duration_s: float = 0.15

    # Head.
    sway_degrees: float = 1.0
    """Peak head roll when idle, in degrees; speech multiplies it by `speech_sway_gain`."""
    sway_pixels: float = 2.5
    """Peak head translation when idle, in pixels at 512 px output height (scaled with it)."""
    speech_sway_gain: float = 1.7
    nod_pixels: float = 2.0
    """Extra downward head motion following speech loudness (pixels at 512 px output height)."""

    def __post_init__(self) -> None:
        if self.width < 16 or self.height < 16:
            raise ValueError(f"LiteSettings: output size must be >= 16x16, got {self.width}x{self.height}")
        lo, hi = self.blink_interval_s
        if not 0 < lo <= hi:
            raise ValueError(f"LiteSettings.blink_interval_s must be 0 < min <= max, got {self.blink_interval_s}")
        if self.attack_ms <= 0 or self.release_ms <= 0:
            raise ValueError("LiteSettings.attack_ms and release_ms must be > 0")
