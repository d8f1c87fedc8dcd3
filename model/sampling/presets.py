"""Named sampler settings: the reference's defaults and the few-step LoRA schedules.

Sources (facts, not code):
* InfiniteTalk `generate_infinitetalk.py`: 40 steps, shift 7 (480p) / 11 (720p), text 5, audio 4.
* InfiniteTalk README: with an acceleration LoRA use text scale 1 and audio scale 2; FusioniX needs
  8 steps (example: shift 2, lora_scale 1.0); lightx2v needs only 4 steps.
* lightx2v (ModelTC) Wan2.1 I2V 4-step LoRA config: steps [1000, 750, 500, 250], shift 5, CFG off
  (the LoRA is CFG-distilled), LoRA strength 1.0. Its own scheduler re-noises x0 with fresh noise
  each step; a deterministic Euler update on the same timesteps also works and needs no noise.
* SoulX-FlashTalk (Soul-AILab, `flash_talk/src/pipeline/flash_talk_pipeline.py` and
  `flash_talk/configs/infer_params.yaml`): a distilled InfiniteTalk DiT sampled with 4 steps and
  shift 5 (its default); timesteps [1000, 750, 500, 250] for 4 steps, [1000, 500] for 2, otherwise
  linspace(1000, 1, steps); each shifted, then 0. One DiT call per step (no CFG); update
  x0 = x - t*v, then re-noise x0 to the next timestep with fresh noise from the seeded generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .guidance import GuidanceScales
from .schedule import distilled_timesteps, flow_timesteps

EULER = "euler"
X0_RENOISE = "x0_renoise"


@dataclass(frozen=True)
class SamplerPreset:
    """A complete sampler setting.

    step_list: explicit distilled steps (then `steps` must equal its length); None -> the
        reference schedule flow_timesteps(steps, shift).
    update: EULER (`euler_step`, the reference) or X0_RENOISE (`x0_renoise_step`, lightx2v's own).
    lora_scale: strength the accompanying LoRA is meant to be merged with (1.0 when none is needed).
    """

    name: str
    steps: int
    shift: float
    guidance: GuidanceScales
    step_list: tuple[int, ...] | None = None
    update: str = EULER
    lora_scale: float = 1.0
    note: str = ""

    def __post_init__(self) -> None:
        if self.step_list is not None and len(self.step_list) != self.steps:
            raise ValueError(f"preset {self.name}: steps={self.steps} but step_list has {len(self.step_list)}")
        if self.update not in (EULER, X0_RENOISE):
            raise ValueError(f"preset {self.name}: update must be {EULER!r} or {X0_RENOISE!r}")

    def timesteps(self) -> torch.Tensor:
        """float32 [steps+1], ending in 0."""
        if self.step_list is not None:
            return distilled_timesteps(self.step_list, self.shift)
        return flow_timesteps(self.steps, self.shift)

    @property
    def model_calls(self) -> int:
        """DiT evaluations per window (steps x guidance branches)."""
        return self.steps * self.guidance.calls_per_step


REFERENCE_480P = SamplerPreset("reference-480p", 40, 7.0, GuidanceScales(5.0, 4.0),
                               note="InfiniteTalk defaults at 480p: 3 DiT calls per step")
REFERENCE_720P = SamplerPreset("reference-720p", 40, 11.0, GuidanceScales(5.0, 4.0),
                               note="InfiniteTalk defaults at 720p")
FUSIONX_8STEP = SamplerPreset("fusionx-8step", 8, 2.0, GuidanceScales(1.0, 2.0),
                              note="InfiniteTalk README FusioniX example: 8 steps, shift 2, text 1, audio 2")
LIGHTX2V_4STEP = SamplerPreset(
    "lightx2v-4step", 4, 5.0, GuidanceScales(1.0, 1.0), step_list=(1000, 750, 500, 250),
    note="lightx2v CFG+step-distilled LoRA: its trained steps and shift 5, no CFG -> 1 DiT call per step")
LIGHTX2V_4STEP_AUDIO_CFG = SamplerPreset(
    "lightx2v-4step-audio-cfg", 4, 5.0, GuidanceScales(1.0, 2.0), step_list=(1000, 750, 500, 250),
    note="as lightx2v-4step plus the README's audio scale 2 for lip sync (2 DiT calls per step)")

FLASHTALK_4STEP = SamplerPreset(
    "flashtalk-4step", 4, 5.0, GuidanceScales(1.0, 1.0), step_list=(1000, 750, 500, 250), update=X0_RENOISE,
    note="SoulX-FlashTalk-14B defaults: 4 steps, shift 5, no CFG, x0 prediction re-noised with fresh noise")
FLASHTALK_2STEP = SamplerPreset(
    "flashtalk-2step", 2, 5.0, GuidanceScales(1.0, 1.0), step_list=(1000, 500), update=X0_RENOISE,
    note="SoulX-FlashTalk-14B with its 2-step timesteps [1000, 500]")

PRESETS: dict[str, SamplerPreset] = {
    p.name: p for p in (REFERENCE_480P, REFERENCE_720P, FUSIONX_8STEP, LIGHTX2V_4STEP, LIGHTX2V_4STEP_AUDIO_CFG,
                        FLASHTALK_4STEP, FLASHTALK_2STEP)
}

# Named steps of the step-distilled checkpoints for a step count (FlashTalk's table; lightx2v's 4-step
# LoRA is trained on the same four). Other counts fall back to the evenly spaced reference schedule.
DISTILLED_STEP_LISTS: dict[int, tuple[int, ...]] = {2: (1000, 500), 4: (1000, 750, 500, 250)}


def distilled_step_list(steps: int) -> tuple[int, ...] | None:
    """The named steps a distilled model uses for `steps` steps, or None (then flow_timesteps(steps))."""
    return DISTILLED_STEP_LISTS.get(steps)


def get_preset(name: str) -> SamplerPreset:
    """Look a preset up by name, with the list of valid names in the error."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown sampler preset {name!r}; choose one of {sorted(PRESETS)}") from None
