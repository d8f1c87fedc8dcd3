"""Colour correction between windows: match each frame's CIE-Lab statistics to a reference frame.

Long InfiniteTalk videos drift in colour because every window is conditioned on frames the model
made itself. The reference pipeline pulls each decoded window back towards the first condition
frame by matching per-channel mean and standard deviation in Lab space (scikit-image's sRGB/Lab
formulas, D65, 2 degree observer), then blends with a strength. This is that operation in torch,
float32 throughout, so it runs on the GPU beside the VAE instead of in numpy on the CPU.
"""

from __future__ import annotations

import torch

# sRGB (linear) -> XYZ, and the D65 / 2 degree white point, as scikit-image uses them.
_XYZ_FROM_RGB = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
_WHITE_D65 = (0.95047, 1.0, 1.08883)


def _matrices(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    m64 = torch.tensor(_XYZ_FROM_RGB, dtype=torch.float64)
    m = m64.to(device=device, dtype=torch.float32)
    m_inv = torch.linalg.inv(m64).to(device=device, dtype=torch.float32)
    white = torch.tensor(_WHITE_D65, dtype=torch.float32, device=device)
    return m, m_inv, white


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """rgb: [..., 3] in [0, 1], float32 -> Lab [..., 3]."""
    m, _, white = _matrices(rgb.device)
    lin = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = (lin @ m.T) / white
    f = torch.where(xyz > 0.008856, xyz.clamp_min(0) ** (1.0 / 3.0), 7.787 * xyz + 16.0 / 116.0)
    fx, fy, fz = f.unbind(-1)
    return torch.stack((116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)), dim=-1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Lab [..., 3] -> rgb [..., 3] clipped to [0, 1], float32."""
    _, m_inv, white = _matrices(lab.device)
    l_, a, b = lab.unbind(-1)
    fy = (l_ + 16.0) / 116.0
    fx = a / 500.0 + fy
    fz = (fy - b / 200.0).clamp_min(0.0)
    f = torch.stack((fx, fy, fz), dim=-1)
    xyz = torch.where(f > 0.2068966, f**3, (f - 16.0 / 116.0) / 7.787) * white
    lin = xyz @ m_inv.T
    rgb = torch.where(lin > 0.0031308, 1.055 * lin.clamp_min(0) ** (1.0 / 2.4) - 0.055, 12.92 * lin)
    return rgb.clamp(0.0, 1.0)


def match_colours(frames: torch.Tensor, reference: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """Pull every frame's Lab mean/std to the reference frame's, blended by `strength`.

    frames: [3, F, H, W] in [-1, 1]; reference: [3, H, W] or [3, 1, H, W] in [-1, 1].
    Returns [3, F, H, W] in [-1, 1], float32. strength 0 returns the input unchanged.
    """
    if strength <= 0:
        return frames
    if reference.dim() == 4:
        reference = reference[:, 0]
    src = ((frames.float() + 1.0) / 2.0).clamp(0.0, 1.0).permute(1, 2, 3, 0)  # [F, H, W, 3]
    ref = ((reference.float() + 1.0) / 2.0).clamp(0.0, 1.0).permute(1, 2, 0)  # [H, W, 3]
    src_lab = rgb_to_lab(src)
    ref_lab = rgb_to_lab(ref)
    ref_mean = ref_lab.mean(dim=(0, 1))
    ref_std = ref_lab.std(dim=(0, 1), correction=0)
    src_mean = src_lab.mean(dim=(1, 2), keepdim=True)
    src_std = src_lab.std(dim=(1, 2), correction=0, keepdim=True)
    scaled = (src_lab - src_mean) * (ref_std / src_std) + ref_mean
    matched = torch.where(src_std == 0, ref_mean.expand_as(src_lab), scaled)
    corrected = lab_to_rgb(matched)
    out = (1.0 - strength) * src + strength * corrected
    return (out * 2.0 - 1.0).permute(3, 0, 1, 2).contiguous()
