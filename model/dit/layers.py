"""Small building blocks of the DiT: norms that compute in float32, the timestep embedding,
the CLIP image-token projector and the output head.

The float32 islands mirror the reference under bf16: norms, modulation arithmetic, the time
embedding and the head run in float32 whatever the parameter dtype.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)


def linear_fp32(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """`layer(x)` computed in float32 (weights cast on the fly when stored in bf16/fp16)."""
    w = layer.weight if layer.weight.dtype == torch.float32 else layer.weight.float()
    b = layer.bias
    if b is not None and b.dtype != torch.float32:
        b = b.float()
    return F.linear(x.float(), w, b)


def sinusoidal_embedding(freq_dim: int, t: torch.Tensor) -> torch.Tensor:
    """Timestep embedding [cos | sin] computed in float64, returned as float32.

    t: [B] -> [B, freq_dim]; angle_k = t * 10000^(-k/half), half = freq_dim/2.
    """
    if freq_dim % 2:
        raise ValueError(f"freq_dim must be even, got {freq_dim}")
    half = freq_dim // 2
    pos = t.to(torch.float64)
    base = torch.full((), 10000.0, dtype=torch.float64, device=t.device)  # a fill, not a host copy
    inv = torch.pow(base, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    angles = pos[:, None] * inv[None, :]
    return torch.cat([angles.cos(), angles.sin()], dim=1).float()


class RMSNorm(nn.Module):
    """RMS norm over the last dim; normalises in float32, casts back, then scales (as the reference).

    The output keeps the input dtype even if the scale is stored in float32 (mixed-dtype checkpoints).
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [..., C]
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return (normed.to(x.dtype) * self.weight).to(x.dtype)


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and cast back to the input dtype (affine or not)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [..., C]
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)


class ImageEmbedding(nn.Module):
    """CLIP tokens -> DiT context tokens: LN, Linear, GELU(erf), Linear, LN (keys `img_emb.proj.*`)."""

    def __init__(self, clip_dim: int, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            FP32LayerNorm(clip_dim, eps=eps),
            nn.Linear(clip_dim, clip_dim),
            nn.GELU(),
            nn.Linear(clip_dim, dim),
            FP32LayerNorm(dim, eps=eps),
        )

    def forward(self, clip_fea: torch.Tensor) -> torch.Tensor:
        # clip_fea: [B, 257, clip_dim] -> [B, 257, dim]
        return self.proj(clip_fea)


class Head(nn.Module):
    """Final modulated LayerNorm + Linear to patch pixels (keys `head.head`, `head.modulation`)."""

    def __init__(self, dim: int, out_dim: int, patch_size: tuple[int, int, int], eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = FP32LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.head = nn.Linear(dim, math.prod(patch_size) * out_dim)
        self.modulation = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        # x: [B, L, dim], e: [B, dim] float32 -> [B, L, prod(patch)*out_dim] float32
        mod = self.modulation.float() + e[:, None, :]
        shift, scale = mod[:, 0:1], mod[:, 1:2]
        h = self.norm(x).float() * (1 + scale) + shift
        return linear_fp32(self.head, h)
