"""VAE blocks: residual block, per-frame attention, spatial(/temporal) down- and upsampling.

Every block takes (x, cache) so encoder and decoder can run them in one loop; submodule names and
indices follow the Wan checkpoint (`residual.0.gamma`, `resample.1.weight`, `time_conv.weight`, ...).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import CausalCache, CausalConv3d, RMSNorm, batch_to_frames, frames_to_batch

logger = logging.getLogger(__name__)


class ResidualBlock(nn.Module):
    """norm-SiLU-conv-norm-SiLU-conv with a 1x1x1 conv shortcut when the width changes."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        # Indices 0..6 are fixed by the checkpoint: 0 norm, 2 conv, 3 norm, 6 conv.
        self.residual = nn.Sequential(
            RMSNorm(in_dim),
            nn.SiLU(),
            CausalConv3d(in_dim, out_dim, 3),
            RMSNorm(out_dim),
            nn.SiLU(),
            nn.Dropout(dropout),
            CausalConv3d(out_dim, out_dim, 3),
        )
        self.shortcut: nn.Module = nn.Conv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: Tensor, cache: CausalCache) -> Tensor:
        # x: [B, C_in, T, H, W] -> [B, C_out, T, H, W]
        r = self.residual
        skip = self.shortcut(x)
        x = r[2](r[1](r[0](x)), cache)
        x = r[6](r[5](r[4](r[3](x))), cache)
        return x + skip


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame separately (no mixing in time)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = RMSNorm(dim, images=True)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor, cache: CausalCache | None = None) -> Tensor:
        # x: [B, C, T, H, W] -> same
        b, c, t, h, w = x.shape
        y = self.norm(frames_to_batch(x))
        # [B*T, 3C, H, W] -> q, k, v: [B*T, 1, H*W, C]
        qkv = self.to_qkv(y).reshape(b * t, 1, 3 * c, h * w).transpose(2, 3)
        q, k, v = qkv.contiguous().chunk(3, dim=-1)
        y = F.scaled_dot_product_attention(q, k, v)
        y = y.squeeze(1).transpose(1, 2).reshape(b * t, c, h, w)
        return batch_to_frames(self.proj(y), b) + x


class _NearestUp2x(nn.Module):
    """2x nearest upsampling of [N, C, H, W]; computed in fp32 (nearest kernels lack bf16 on some builds)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x.float(), scale_factor=2.0, mode="nearest-exact").to(x.dtype)


class Downsample(nn.Module):
    """Halve H and W (stride-2 conv after right/bottom zero pad); with `temporal`, also halve time.

    Temporal halving is causal: the first frame of a stream passes through alone; afterwards each output
    frame mixes input frames (2i, 2i+1, 2i+2) of the sequence, so T = 1 + 4n frames become 1 + 2n.
    """

    def __init__(self, dim: int, temporal: bool) -> None:
        super().__init__()
        self.temporal = temporal
        self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
        if temporal:
            self.time_conv = nn.Conv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))

    def forward(self, x: Tensor, cache: CausalCache) -> Tensor:
        # x: [B, C, T, H, W] -> [B, C, T', H/2, W/2]
        x = batch_to_frames(self.resample(frames_to_batch(x)), x.shape[0])
        if not self.temporal:
            return x
        prev = cache.get(self)
        cache.put(self, x[:, :, -1:].clone())
        if prev is None:  # first chunk of the stream: no temporal mixing yet
            return x
        return self.time_conv(torch.cat([prev, x], dim=2))


_FIRST_CHUNK_SEEN = "first-chunk-seen"


class Upsample(nn.Module):
    """Double H and W (nearest + conv to dim/2 channels); with `temporal`, also double time.

    Temporal doubling is causal and skips the stream's first chunk (one latent frame -> one frame);
    every later frame becomes two, made by a causal (3,1,1) conv with 2x channels split in time. The
    conv's context starts (as zeros) at the second chunk, so the first frame never feeds it.
    """

    def __init__(self, dim: int, temporal: bool) -> None:
        super().__init__()
        self.temporal = temporal
        self.resample = nn.Sequential(_NearestUp2x(), nn.Conv2d(dim, dim // 2, 3, padding=1))
        if temporal:
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1))

    def forward(self, x: Tensor, cache: CausalCache) -> Tensor:
        # x: [B, C, T, H, W] -> [B, C/2, T', 2H, 2W]  (T' = T on the first chunk, else 2T)
        if self.temporal:
            if cache.get(self) is None:
                cache.put(self, _FIRST_CHUNK_SEEN)
            else:
                b, c, t, h, w = x.shape
                # [B, 2C, T, H, W] -> [B, 2, C, T, H, W] -> [B, C, T, 2, H, W]: two frames per input frame
                x = self.time_conv(x, cache).reshape(b, 2, c, t, h, w).permute(0, 2, 3, 1, 4, 5)
                x = x.reshape(b, c, 2 * t, h, w)
        return batch_to_frames(self.resample(frames_to_batch(x)), x.shape[0])
