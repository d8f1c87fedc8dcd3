"""Building blocks of the LTX-Video 0.9.0 VAE: its frame-replicating causal conv, pixel norm, residual
blocks, the stride-2 downsampling conv and the depth-to-space upsampler, and (un)patchify.

Module and parameter names follow the reference's own model (`CausalVideoAutoencoder`), so a state dict
in its naming loads strictly; `ltx_loading.py` maps the diffusers names of the release onto them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LtxCausalConv3d(nn.Module):
    """A 3D conv padded in time by repeating edge frames (not zeros): causal repeats the first frame
    k-1 times before; non-causal repeats the first and last frame (k-1)/2 times each side. Space: zeros.
    The weight sits at `.conv` as in the reference."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int | tuple[int, int, int] = 1) -> None:
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv3d(cin, cout, kernel, stride=stride, padding=(0, kernel // 2, kernel // 2))

    def forward(self, x: Tensor, causal: bool) -> Tensor:
        k = self.kernel - 1
        if k:
            if causal:
                x = torch.cat([x[:, :, :1].expand(-1, -1, k, -1, -1), x], dim=2)
            else:
                h = k // 2
                x = torch.cat([x[:, :, :1].expand(-1, -1, h, -1, -1), x, x[:, :, -1:].expand(-1, -1, h, -1, -1)], 2)
        return self.conv(x)


def pixel_norm(x: Tensor, eps: float = 1e-8) -> Tensor:
    """The reference's PixelNorm: x / sqrt(mean over channels of x^2 + 1e-8) (no parameters)."""
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + eps)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of [B, C, T, H, W] (weights at `.norm`, as the reference's)."""

    def __init__(self, channels: int, eps: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


class LtxResBlock(nn.Module):
    """pixel norm, SiLU, conv, pixel norm, SiLU, conv, plus the input (layer-normed and 1x1x1-projected
    when the channel count changes). No noise injection, no timestep modulation (0.9.0)."""

    def __init__(self, cin: int, cout: int, eps: float) -> None:
        super().__init__()
        self.conv1 = LtxCausalConv3d(cin, cout)
        self.conv2 = LtxCausalConv3d(cout, cout)
        self.norm3: nn.Module = ChannelLayerNorm(cin, eps) if cin != cout else nn.Identity()
        self.conv_shortcut: nn.Module = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, causal: bool) -> Tensor:
        h = self.conv1(F.silu(pixel_norm(x)), causal)
        h = self.conv2(F.silu(pixel_norm(h)), causal)
        return self.conv_shortcut(self.norm3(x)) + h


class LtxResStack(nn.Module):
    """The reference's "res_x" (UNetMidBlock3D without attention or timestep): residual blocks in a row."""

    def __init__(self, channels: int, layers: int, eps: float) -> None:
        super().__init__()
        self.res_blocks = nn.ModuleList(LtxResBlock(channels, channels, eps) for _ in range(layers))

    def forward(self, x: Tensor, causal: bool) -> Tensor:
        for block in self.res_blocks:
            x = block(x, causal)
        return x


class LtxDownsample(LtxCausalConv3d):
    """The reference's "compress_all" in the encoder: a causal 3x3x3 conv of stride 2 in time and space."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, channels, 3, stride=2)


class LtxDepthToSpace(nn.Module):
    """The reference's "compress_all" in the decoder: conv to 8x channels, unfolded into 2x time and space,
    then the first frame dropped (so T latent-side frames become 2T - 1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = LtxCausalConv3d(channels, channels * 8)

    def forward(self, x: Tensor, causal: bool) -> Tensor:
        x = self.conv(x, causal)
        b, c8, t, h, w = x.shape
        x = x.reshape(b, c8 // 8, 2, 2, 2, t, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
        return x.reshape(b, c8 // 8, t * 2, h * 2, w * 2)[:, :, 1:]


def patchify(x: Tensor, p: int) -> Tensor:
    """[B, C, T, H, W] -> [B, C*p*p, T, H/p, W/p], channels ordered (c, w-offset, h-offset) as the reference's."""
    if p == 1:
        return x
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t, h // p, p, w // p, p).permute(0, 1, 6, 4, 2, 3, 5)
    return x.reshape(b, c * p * p, t, h // p, w // p)


def unpatchify(x: Tensor, p: int) -> Tensor:
    """The inverse of `patchify`."""
    if p == 1:
        return x
    b, cpp, t, h, w = x.shape
    x = x.reshape(b, cpp // (p * p), p, p, t, h, w).permute(0, 1, 4, 5, 3, 6, 2)
    return x.reshape(b, cpp // (p * p), t, h * p, w * p)
