"""The LTX-Video 0.9.0 causal video VAE (SoulX-FlashHead Lite): 8x32x32 compression, 128 latent channels,
latents normalised per channel by the checkpoint's mean and std.

Encoder: causal in time (frame t sees frames <= t), so F = 1 + 8k frames give 1 + k latent frames. Its
output is a diagonal Gaussian with one log-variance shared by all channels; the reference (`LtxVAE.encode`)
SAMPLES it (mean + std * N(0, 1), drawn from torch's global generator), so `encode` takes the draw
explicitly: `noise` (a recorded draw), a `generator`, or neither for the mean.

Decoder: NOT causal in time (the released config has `causal_decoder: false`): every conv repeats the
first and last frame as padding and sees one frame ahead, so a latent frame's pixels depend on the next
latent frames and on where the window ends. A chunk therefore decodes only as a whole window (no
frame-by-frame streaming decode as with the Wan VAE); decoding a window in pieces gives other pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ltx_config import LtxVAEConfig
from .ltx_layers import (
    LtxCausalConv3d,
    LtxDepthToSpace,
    LtxDownsample,
    LtxResBlock,
    LtxResStack,
    patchify,
    pixel_norm,
    unpatchify,
)

LOGVAR_CLAMP = (-30.0, 20.0)  # diffusers' DiagonalGaussianDistribution, which the reference uses


def _block(kind: str, cin: int, n: int, eps: float) -> nn.Module:
    if kind == "res":
        return LtxResStack(cin, n, eps)
    if kind == "down":
        return LtxDownsample(cin)
    if kind == "up":
        return LtxDepthToSpace(cin)
    return LtxResBlock(cin, n, eps)  # widen / narrow: one residual block that changes the channel count


class LtxEncoder(nn.Module):
    """pixels [B, 3, F, H, W] -> moments [B, C + 1, T, h, w] (C mean channels, then the shared log-variance)."""

    def __init__(self, cfg: LtxVAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch = cfg.block_out_channels
        self.conv_in = LtxCausalConv3d(cfg.in_channels * cfg.patch_size**2, ch[0])
        self.down_blocks = nn.ModuleList(_block(k, c, n, cfg.eps) for k, c, n in cfg.encoder_plan())
        self.conv_out = LtxCausalConv3d(ch[-1], cfg.latent_channels + 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_in(patchify(x, self.cfg.patch_size), causal=True)
        for block in self.down_blocks:
            x = block(x, causal=True)
        return self.conv_out(F.silu(pixel_norm(x)), causal=True)


class LtxDecoder(nn.Module):
    """latents [B, C, T, h, w] (un-normalised) -> pixels [B, 3, 1 + 8(T-1), 32h, 32w], not clamped."""

    def __init__(self, cfg: LtxVAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch = cfg.block_out_channels
        self.conv_in = LtxCausalConv3d(cfg.latent_channels, ch[-1])
        self.up_blocks = nn.ModuleList(_block(k, c, n, cfg.eps) for k, c, n in cfg.decoder_plan())
        self.conv_out = LtxCausalConv3d(ch[0], cfg.out_channels * cfg.patch_size**2)

    def forward(self, z: Tensor) -> Tensor:
        x = self.conv_in(z, causal=False)
        for block in self.up_blocks:
            x = block(x, causal=False)
        x = self.conv_out(F.silu(pixel_norm(x)), causal=False)
        return unpatchify(x, self.cfg.patch_size)


class LtxVAE(nn.Module):
    """Batched encode / decode on normalised latents ((z - mean) / std per channel, as FlashHead's DiT sees them)."""

    def __init__(self, cfg: LtxVAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = LtxEncoder(cfg)
        self.decoder = LtxDecoder(cfg)
        self.register_buffer("latents_mean", torch.zeros(cfg.latent_channels))
        self.register_buffer("latents_std", torch.ones(cfg.latent_channels))

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.conv_in.conv.weight.dtype

    def _stats(self, like: Tensor) -> tuple[Tensor, Tensor]:
        view = (1, -1, 1, 1, 1)
        return self.latents_mean.to(like.dtype).view(view), self.latents_std.to(like.dtype).view(view)

    def posterior(self, video: Tensor) -> tuple[Tensor, Tensor]:
        """video [B, 3, F, H, W] in [-1, 1] -> (mean, std) of the raw (un-normalised) latent, each [B, C, T, h, w]
        (std broadcast from the one shared channel)."""
        if video.shape[2] % self.cfg.temporal_stride != 1 % self.cfg.temporal_stride:
            raise ValueError(f"the LTX VAE encodes 1 + {self.cfg.temporal_stride}k frames, got {video.shape[2]}")
        s = self.cfg.spatial_stride
        if video.shape[-2] % s or video.shape[-1] % s:
            raise ValueError(f"the LTX VAE needs H and W divisible by {s}, got {tuple(video.shape[-2:])}")
        moments = self.encoder(video)
        c = self.cfg.latent_channels
        mean, logvar = moments[:, :c], moments[:, c:].clamp(*LOGVAR_CLAMP)
        return mean, torch.exp(0.5 * logvar).expand_as(mean)

    @torch.no_grad()
    def encode(self, video: Tensor, noise: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Normalised latents: the posterior mean, or a sample mean + std * draw when `noise` (the draw itself,
        [B, C, T, h, w]) or a `generator` (draws float32 on its device) is given."""
        mean, std = self.posterior(video)
        if noise is None and generator is not None:
            noise = torch.randn(mean.shape, generator=generator, device=generator.device, dtype=torch.float32)
        z = mean if noise is None else mean + std * noise.to(mean.device, mean.dtype)
        m, sd = self._stats(z)
        return (z - m) / sd

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Normalised latents [B, C, T, h, w] -> pixels [B, 3, 1 + 8(T-1), H, W] (not clamped, as the reference)."""
        m, sd = self._stats(latents)
        return self.decoder((latents * sd + m).to(self.dtype))
