"""Single sampler updates on a window latent [C, T, H, W] (or any shape; time values are scalars).

Timesteps are given on the [0, 1000] scale, as float32 scalars, Python floats or 1-element tensors;
differences are taken in float32 like the reference so results match it bit for bit.
"""

from __future__ import annotations

import torch

from .schedule import NUM_TIMESTEPS

TimeLike = float | torch.Tensor


def _t32(t: TimeLike, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=torch.float32, device=device)
    if t.numel() != 1:
        raise ValueError(f"a timestep must be a single value, got shape {list(t.shape)}")
    return t.reshape(())


def euler_step(latent: torch.Tensor, pred: torch.Tensor, t_i: TimeLike, t_next: TimeLike,
               num_timesteps: int = NUM_TIMESTEPS) -> torch.Tensor:
    """Flow-matching Euler update of the reference: latent + (-pred) * (t_i - t_next)/num_timesteps.

    pred is the guided velocity (noise - data direction) at t_i.
    """
    dt = (_t32(t_i, latent.device) - _t32(t_next, latent.device)) / num_timesteps
    return latent + (-pred) * dt.to(latent.dtype)


def renoise_motion(motion_latent: torch.Tensor, noise: torch.Tensor, t: TimeLike,
                   num_timesteps: int = NUM_TIMESTEPS) -> torch.Tensor:
    """The reference's `add_noise`: (1 - t/N)*motion + (t/N)*noise.

    In the reference loop every such blend is immediately overwritten by the clean motion paste, so
    it only consumes random draws; it is here for parity and for samplers that want noisy context.
    """
    s = (_t32(t, motion_latent.device) / num_timesteps).to(motion_latent.dtype)
    return (1 - s) * motion_latent + s * noise


def x0_renoise_step(latent: torch.Tensor, pred: torch.Tensor, t_i: TimeLike, t_next: TimeLike,
                    noise: torch.Tensor | None, num_timesteps: int = NUM_TIMESTEPS) -> torch.Tensor:
    """Stochastic step of lightx2v's own step-distill scheduler: predict x0 = x - sigma*pred, then
    re-noise it to sigma_next with fresh `noise`.

    The last step (t_next == 0) passes noise=None and gets x0, which is what re-noising to sigma 0
    gives. The caller decides which step is last from its step count: a t_next on the GPU is not read
    back to check it (that would make the host wait for the device every step); on the host it is.
    """
    sigma = _t32(t_i, latent.device) / num_timesteps
    x0 = latent - sigma.to(latent.dtype) * pred
    if noise is None:
        on_host = not isinstance(t_next, torch.Tensor) or t_next.device.type == "cpu"
        if on_host and float(t_next) != 0.0:
            raise ValueError("x0_renoise_step needs `noise` for every step but the last")
        return x0
    s = (_t32(t_next, latent.device) / num_timesteps).to(latent.dtype)
    return (1 - s) * x0 + s * noise
