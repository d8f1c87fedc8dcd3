"""Settings of InfiniteTalk window generation, as data."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from model.dit.teacache import TeaCacheSettings
from model.sampling import (
    EULER,
    X0_RENOISE,
    GuidanceScales,
    SamplerPreset,
    distilled_timesteps,
    flow_timesteps,
)


@dataclass(frozen=True)
class WindowSettings:
    """How one window is made.

    frame_num: frames per window F (4n+1; reference 81). motion_frames: M frames of the previous
        window that condition the next (reference 9), so each later window adds F - M new frames.
    steps, shift, step_list: the flow-matching schedule (step_list for distilled LoRAs).
    guidance: text/audio CFG scales (3, 2 or 1 DiT branch per step).
    update: "euler" (the reference) or "x0_renoise" (distilled schedulers).
    colour_strength: Lab colour match against the first condition frame (0 = off; reference 1).
    audio_scale: multiplier on the audio cross-attention (the adapter's strength).
    batch_branches: run the guidance branches as one batched DiT call (same numbers, faster).
    apg: adaptive projected guidance instead of vanilla CFG (reference `--use_apg`).
    teacache: skip the DiT blocks on steps whose timestep input barely moved, reusing each branch's
        last residual (reference `--use_teacache`); None = off (every step computes).
    """

    frame_num: int = 81
    motion_frames: int = 9
    steps: int = 40
    shift: float = 7.0
    step_list: tuple[int, ...] | None = None
    guidance: GuidanceScales = field(default_factory=GuidanceScales)
    update: str = EULER
    colour_strength: float = 1.0
    audio_scale: float = 1.0
    batch_branches: bool = True
    apg: bool = False
    teacache: TeaCacheSettings | None = None

    def __post_init__(self) -> None:
        if self.frame_num < 5 or (self.frame_num - 1) % 4:
            raise ValueError(f"frame_num must be 4n+1 and >= 5 (e.g. 33, 81), got {self.frame_num}")
        if self.motion_frames < 1 or (self.motion_frames - 1) % 4 or self.motion_frames >= self.frame_num:
            raise ValueError(
                f"motion_frames must be 4n+1 and < frame_num (e.g. 5 or 9), got {self.motion_frames}"
            )
        if self.steps < 1:
            raise ValueError("steps must be >= 1")
        if self.step_list is not None and len(self.step_list) != self.steps:
            raise ValueError(f"step_list has {len(self.step_list)} entries for {self.steps} steps")
        if self.update not in (EULER, X0_RENOISE):
            raise ValueError(f"update must be {EULER!r} or {X0_RENOISE!r}")
        if not 0.0 <= self.colour_strength <= 1.0:
            raise ValueError("colour_strength must be in [0, 1]")

    @classmethod
    def from_preset(cls, preset: SamplerPreset, **overrides) -> WindowSettings:
        base = dict(steps=preset.steps, shift=preset.shift, step_list=preset.step_list,
                    guidance=preset.guidance, update=preset.update)
        base.update(overrides)
        return cls(**base)

    @property
    def new_frames(self) -> int:
        """Frames each window after the first adds to the video."""
        return self.frame_num - self.motion_frames

    @property
    def latent_frames(self) -> int:
        return (self.frame_num - 1) // 4 + 1

    @property
    def motion_latent_frames(self) -> int:
        return (self.motion_frames - 1) // 4 + 1

    def timesteps(self) -> torch.Tensor:
        """float32 [steps + 1] ending in 0."""
        if self.step_list is not None:
            return distilled_timesteps(self.step_list, self.shift)
        return flow_timesteps(self.steps, self.shift)
