"""Flow-matching sampler pieces for InfiniteTalk windows (schedules, guidance, updates, presets).

The window loop itself (paste motion latent, call the DiT for each branch, combine, step, paste)
belongs to the Generator; this package holds the arithmetic it is made of.
"""

from .guidance import (
    BRANCH_SPECS,
    COND,
    DROP_AUDIO,
    DROP_TEXT,
    UNCOND,
    APGGuidance,
    BranchSpec,
    GuidanceScales,
    MomentumBuffer,
    adaptive_projected_guidance,
    combine_guidance,
    guidance_branches,
)
from .presets import (
    DISTILLED_STEP_LISTS,
    EULER,
    FLASHTALK_2STEP,
    FLASHTALK_4STEP,
    FUSIONX_8STEP,
    LIGHTX2V_4STEP,
    LIGHTX2V_4STEP_AUDIO_CFG,
    PRESETS,
    REFERENCE_480P,
    REFERENCE_720P,
    X0_RENOISE,
    SamplerPreset,
    distilled_step_list,
    get_preset,
)
from .schedule import NUM_TIMESTEPS, distilled_timesteps, flow_timesteps, shift_timesteps
from .steps import euler_step, renoise_motion, x0_renoise_step

__all__ = [
    "APGGuidance", "BRANCH_SPECS", "BranchSpec", "COND", "DISTILLED_STEP_LISTS", "DROP_AUDIO", "DROP_TEXT",
    "EULER", "FLASHTALK_2STEP", "FLASHTALK_4STEP", "FUSIONX_8STEP", "GuidanceScales", "LIGHTX2V_4STEP", "LIGHTX2V_4STEP_AUDIO_CFG", "MomentumBuffer",
    "NUM_TIMESTEPS", "PRESETS", "REFERENCE_480P", "REFERENCE_720P", "SamplerPreset", "UNCOND",
    "X0_RENOISE", "adaptive_projected_guidance", "combine_guidance", "distilled_step_list", "distilled_timesteps",
    "euler_step", "flow_timesteps", "get_preset", "guidance_branches", "renoise_motion",
    "shift_timesteps", "x0_renoise_step",
]
