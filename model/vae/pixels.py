"""Conversions between uint8 RGB frames and the VAE's [-1, 1] float video layout.

Forward is the reference's `(u8 / 255 - 0.5) * 2` in float32. The inverse rounds to the nearest level,
so uint8 -> float -> uint8 is the identity. The reference's own video writer instead truncates
(`uint8(clip((x + 1) / 2 * 255))`, on average half a level darker); pass `truncate=True` to match it.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import Tensor

logger = logging.getLogger(__name__)


def frames_to_video(frames: Tensor | np.ndarray, device: torch.device | str | None = None) -> Tensor:
    """uint8 RGB [..., N, H, W, 3] -> float32 [..., 3, N, H, W] in [-1, 1] (add a batch dim for `encode`)."""
    f = torch.as_tensor(frames, device=device)
    if f.dtype != torch.uint8 or f.ndim < 4 or f.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [..., N, H, W, 3], got {f.dtype} {list(f.shape)}")
    x = (f.to(torch.float32) / 255 - 0.5) * 2
    return x.movedim(-1, -4)


def video_to_frames(video: Tensor, truncate: bool = False) -> Tensor:
    """float [..., 3, N, H, W] in [-1, 1] -> uint8 RGB [..., N, H, W, 3] (values outside are clipped).

    Rounds to nearest by default; truncate=True reproduces the reference writer's floor.
    """
    if video.ndim < 4 or video.shape[-4] != 3:
        raise ValueError(f"video must be [..., 3, N, H, W], got {list(video.shape)}")
    x = ((video.float() + 1) / 2 * 255).clamp_(0, 255)
    x = x.floor_() if truncate else x.round_()
    return x.to(torch.uint8).movedim(-4, -1).contiguous()
