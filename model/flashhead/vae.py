"""The VAEs as FlashHead's chunk loop uses them: unbatched pixels [3, F, H, W] <-> latents [C, T, h, w].

Pro: the Wan2.1 VAE (`model.vae.WanVAE`, already ported). Lite's LTX-Video VAE is not ported yet.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from model.vae import VAEConfig, WanVAE
from model.vae.loading import load_wan_vae

from .release import VAE_SIDECAR


class WanChunkVAE:
    """`loop.ChunkVAE` over a `WanVAE` (normalised latents, decoded frames clamped to [-1, 1])."""

    def __init__(self, vae: WanVAE) -> None:
        self.vae = vae
        self.cfg = vae.cfg

    @property
    def device(self) -> torch.device:
        return self.vae.conv2.weight.device

    @property
    def temporal_stride(self) -> int:
        return self.cfg.temporal_stride

    @property
    def spatial_stride(self) -> int:
        return self.cfg.spatial_stride

    @property
    def latent_channels(self) -> int:
        return self.cfg.z_dim

    def encode(self, video: Tensor) -> Tensor:
        return self.vae.encode(video[None].to(self.device, self.vae.dtype))[0]

    def decode(self, latent: Tensor) -> Tensor:
        return self.vae.decode(latent[None].to(self.device, self.vae.dtype))[0]

    def frames_for_latents(self, latents: int) -> int:
        return 1 + self.cfg.temporal_stride * (latents - 1)


def load_wan_chunk_vae(path: Path, device: str | torch.device = "cpu") -> WanChunkVAE:
    """The Pro VAE file (float32), with the sizes of a `vae_config.json` beside it when there is one."""
    sidecar = path.parent / VAE_SIDECAR
    cfg = VAEConfig.from_reference_kwargs(json.loads(sidecar.read_text())) if sidecar.is_file() else None
    return WanChunkVAE(load_wan_vae(path, cfg, device=device))
