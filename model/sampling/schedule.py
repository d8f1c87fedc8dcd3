"""Flow-matching timestep schedules: the InfiniteTalk reference one and the few-step distilled ones.

Timesteps live on the model's [0, num_timesteps] scale (1000 for Wan); the sampler divides by
`num_timesteps` where it needs sigmas. All arithmetic is float32 in the reference's order so that a
schedule built here is bit-identical to the one the reference pipeline feeds its DiT.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

NUM_TIMESTEPS = 1000
"""Wan's training timestep count (`num_train_timesteps`)."""


def shift_timesteps(t: torch.Tensor, shift: float, num_timesteps: int = NUM_TIMESTEPS) -> torch.Tensor:
    """Apply the flow-matching shift u -> shift*u / (1 + (shift-1)*u) with u = t/num_timesteps.

    Larger shifts spend more of the schedule at high noise (the reference uses 7 at 480p, 11 at 720p).
    Computed in t's dtype (float32) in the reference's order: divide, map, multiply back.
    """
    u = t / num_timesteps
    return (shift * u / (1 + (shift - 1) * u)) * num_timesteps


def flow_timesteps(steps: int, shift: float, num_timesteps: int = NUM_TIMESTEPS,
                   use_shift: bool = True) -> torch.Tensor:
    """The reference schedule: float32 [steps+1] = shift(linspace(num_timesteps, 1, steps) ++ [0]).

    Step i of the Euler loop goes from t[i] to t[i+1]; the final 0 is never given to the model.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    base = np.linspace(num_timesteps, 1, steps, dtype=np.float32)
    t = torch.from_numpy(np.append(base, np.float32(0.0)).astype(np.float32))
    return shift_timesteps(t, shift, num_timesteps) if use_shift else t


def distilled_timesteps(step_list: Sequence[int], shift: float,
                        num_timesteps: int = NUM_TIMESTEPS) -> torch.Tensor:
    """Schedule of step-distilled checkpoints/LoRAs that name their steps (e.g. [1000, 750, 500, 250]).

    Each listed step k picks sigma = 1 - (num_timesteps - k)/num_timesteps from a
    num_timesteps-point grid, shifted; a final 0 is appended. lightx2v's 4-step Wan2.1 LoRAs are
    trained for [1000, 750, 500, 250] with shift 5 -> [1000, 937.5, 833.3, 625, 0].
    Returns float32 [len(step_list)+1].
    """
    if not step_list:
        raise ValueError("step_list is empty")
    if any(not 0 < k <= num_timesteps for k in step_list):
        raise ValueError(f"every step must be in (0, {num_timesteps}], got {list(step_list)}")
    grid = torch.linspace(1.0, 0.0, num_timesteps + 1, dtype=torch.float32)[:-1]
    grid = shift * grid / (1 + (shift - 1) * grid)
    picked = grid[[num_timesteps - int(k) for k in step_list]] * num_timesteps
    return torch.cat([picked, torch.zeros(1, dtype=torch.float32)])
