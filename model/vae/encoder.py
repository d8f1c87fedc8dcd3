"""The VAE encoder: video [B, 3, T, H, W] -> moments [B, 2*z_dim, 1 + (T-1)/4, H/8, W/8], one chunk at a time."""

from __future__ import annotations

import logging

from torch import Tensor, nn

from .blocks import AttentionBlock, Downsample, ResidualBlock
from .config import VAEConfig
from .layers import CausalCache, CausalConv3d, RMSNorm

logger = logging.getLogger(__name__)


class Encoder3d(nn.Module):
    """conv1 -> per stage (residual blocks [+ attention], downsample) -> middle (res, attn, res) -> head.

    `out_channels` is 2 * z_dim (mean and log-variance, the caller keeps the mean).
    """

    def __init__(self, cfg: VAEConfig, out_channels: int) -> None:
        super().__init__()
        dims = [cfg.dim * m for m in (1, *cfg.dim_mult)]
        self.conv1 = CausalConv3d(3, dims[0], 3)

        layers: list[nn.Module] = []
        scale = 1.0
        last = len(cfg.dim_mult) - 1
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            for _ in range(cfg.num_res_blocks):
                layers.append(ResidualBlock(in_dim, out_dim, cfg.dropout))
                if scale in cfg.attn_scales:
                    layers.append(AttentionBlock(out_dim))
                in_dim = out_dim
            if i != last:
                layers.append(Downsample(out_dim, temporal=cfg.temporal_downsample[i]))
                scale /= 2.0
        self.downsamples = nn.Sequential(*layers)

        top = dims[-1]
        self.middle = nn.Sequential(
            ResidualBlock(top, top, cfg.dropout), AttentionBlock(top), ResidualBlock(top, top, cfg.dropout)
        )
        self.head = nn.Sequential(RMSNorm(top), nn.SiLU(), CausalConv3d(top, out_channels, 3))

    def forward(self, x: Tensor, cache: CausalCache) -> Tensor:
        # x: [B, 3, t, H, W] (one chunk: 1 frame first, then 4) -> [B, 2*z_dim, 1, H/8, W/8]
        x = self.conv1(x, cache)
        for layer in self.downsamples:
            x = layer(x, cache)
        for layer in self.middle:
            x = layer(x, cache)
        return self.head[2](self.head[1](self.head[0](x)), cache)
