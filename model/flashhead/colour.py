"""FlashHead's colour correction (reference `match_and_blend_colors_torch`): each decoded frame's
Lab mean and standard deviation pulled to the reference image's, blended by a strength.

It is not InfiniteTalk's (`model.colour`): the reference uses other sRGB<->XYZ matrices (more
digits), clamps XYZ to [1e-8, 1] before the cube root, converts Lab back with CIE's kappa/epsilon
form, and treats a flat frame (std < 1e-8) by dividing by 1. Kept separate so each family matches
its own reference.
"""

from __future__ import annotations

import torch
from torch import Tensor

_RGB_TO_XYZ = ((0.4124564, 0.3575761, 0.1804375), (0.2126729, 0.7151522, 0.0721750), (0.0193339, 0.1191920, 0.9503041))
_XYZ_TO_RGB = ((3.2404542, -1.5371385, -0.4985314), (-0.9692660, 1.8760108, 0.0415560), (0.0556434, -0.2040259, 1.0572252))
_WHITE = (0.95047, 1.0, 1.08883)
_EPSILON = 0.008856
_KAPPA = 903.3


def _const(values: tuple, like: Tensor) -> Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device)


def rgb_to_lab(rgb: Tensor) -> Tensor:
    """rgb [..., 3] in [0, 1] -> Lab [..., 3] (the reference's formulas)."""
    lin = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = (lin.reshape(-1, 3) @ _const(_RGB_TO_XYZ, rgb).T).reshape(rgb.shape) / _const(_WHITE, rgb)
    xyz = xyz.clamp(1e-8, 1.0)
    f = torch.where(xyz > _EPSILON, xyz ** (1 / 3), (_KAPPA * xyz + 16) / 116)
    fx, fy, fz = f.unbind(-1)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=-1)


def lab_to_rgb(lab: Tensor) -> Tensor:
    """Lab [..., 3] -> rgb [..., 3] clipped to [0, 1] (the reference's formulas)."""
    lum, a, b = lab.unbind(-1)
    fy = (lum + 16) / 116
    fx = a / 500 + fy
    fz = fy - b / 200
    x = torch.where(fx**3 > _EPSILON, fx**3, (116 * fx - 16) / _KAPPA)
    y = torch.where(lum > _KAPPA * _EPSILON, fy**3, lum / _KAPPA)
    z = torch.where(fz**3 > _EPSILON, fz**3, (116 * fz - 16) / _KAPPA)
    xyz = torch.stack([x, y, z], dim=-1) * _const(_WHITE, lab)
    lin = (xyz.reshape(-1, 3) @ _const(_XYZ_TO_RGB, lab).T).reshape(xyz.shape)
    rgb = torch.where(lin > 0.0031308, 1.055 * lin ** (1 / 2.4) - 0.055, 12.92 * lin)
    return rgb.clamp(0.0, 1.0)


def match_colours_flashhead(frames: Tensor, reference: Tensor, strength: float = 1.0) -> Tensor:
    """frames [3, F, H, W] and reference [3, H, W] in [-1, 1] -> corrected frames [3, F, H, W].

    strength in [0, 1]: 0 returns the frames unchanged, 1 the fully matched colours.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"colour strength must be in [0, 1], got {strength}")
    if strength == 0.0:
        return frames
    src = ((frames + 1.0) / 2.0).permute(1, 2, 3, 0)  # [F, H, W, 3]
    ref = ((reference.to(frames) + 1.0) / 2.0).permute(1, 2, 0)  # [H, W, 3]
    src_lab, ref_lab = rgb_to_lab(src), rgb_to_lab(ref)
    ref_mean, ref_std = ref_lab.mean(dim=(0, 1)), ref_lab.std(dim=(0, 1), correction=0)
    src_mean = src_lab.mean(dim=(1, 2), keepdim=True)
    src_std = src_lab.std(dim=(1, 2), correction=0, keepdim=True)
    src_std = torch.where(src_std < 1e-8, torch.ones_like(src_std), src_std)
    corrected = lab_to_rgb((src_lab - src_mean) * (ref_std / src_std) + ref_mean)
    blended = (1 - strength) * src + strength * corrected
    return (blended * 2.0 - 1.0).permute(3, 0, 1, 2).contiguous()
