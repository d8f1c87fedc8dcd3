"""The VAE decoder: latents [B, z_dim, T', h, w] -> video [B, 3, 1 + 4(T'-1), 8h, 8w], one latent frame at a time."""

from __future__ import annotations

import logging

from torch import Tensor, nn

from .blocks import AttentionBlock, ResidualBlock, Upsample
from .config import VAEConfig
from .layers import CausalCache, CausalConv3d, RMSNorm

logger = logging.getLogger(__name__)


class Decoder3d(nn.Module):
    """conv1 -> middle (res, attn, res) -> per stage (residual blocks [+ attention], upsample) -> head.

    Mirrors the encoder: stage widths reversed, temporal upsampling where the encoder downsampled in
    time. Each upsample halves the width, so every stage after the first starts at half its input width.
    """

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        mult = cfg.dim_mult
        dims = [cfg.dim * m for m in (mult[-1], *mult[::-1])]
        temporal_upsample = cfg.temporal_downsample[::-1]
        self.conv1 = CausalConv3d(cfg.z_dim, dims[0], 3)
        self.middle = nn.Sequential(
            ResidualBlock(dims[0], dims[0], cfg.dropout),
            AttentionBlock(dims[0]),
            ResidualBlock(dims[0], dims[0], cfg.dropout),
        )

        layers: list[nn.Module] = []
        scale = 1.0 / 2 ** (len(mult) - 2)
        last = len(mult) - 1
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            if i > 0:
                in_dim //= 2
            for _ in range(cfg.num_res_blocks + 1):
                layers.append(ResidualBlock(in_dim, out_dim, cfg.dropout))
                if scale in cfg.attn_scales:
                    layers.append(AttentionBlock(out_dim))
                in_dim = out_dim
            if i != last:
                layers.append(Upsample(out_dim, temporal=temporal_upsample[i]))
                scale *= 2.0
        self.upsamples = nn.Sequential(*layers)
        self.head = nn.Sequential(RMSNorm(dims[-1]), nn.SiLU(), CausalConv3d(dims[-1], 3, 3))

    def forward(self, x: Tensor, cache: CausalCache) -> Tensor:
        # x: [B, z_dim, 1, h, w] (one latent frame) -> [B, 3, n, 8h, 8w], n = 1 first, then 4
        x = self.conv1(x, cache)
        for layer in self.middle:
            x = layer(x, cache)
        for layer in self.upsamples:
            x = layer(x, cache)
        return self.head[2](self.head[1](self.head[0](x)), cache)
