"""The VAEs as FlashHead's chunk loop uses them: unbatched pixels [3, F, H, W] <-> latents [C, T, h, w].

Pro: the Wan2.1 VAE (`model.vae.WanVAE`). Lite: the LTX-Video 0.9.0 VAE (`model.vae.ltx_vae.LtxVAE`), whose
encode samples the posterior as the reference's does (its decode is not clamped, as the reference's is not).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from model.vae import VAEConfig, WanVAE
from model.vae.loading import load_wan_vae
from model.vae.ltx_config import LtxVAEConfig
from model.vae.ltx_loading import load_ltx_vae
from model.vae.ltx_vae import LtxVAE

from .release import VAE_SIDECAR


class _ChunkVAE:
    """What both chunk VAEs share: strides from the config, unbatched decode on the VAE's device and dtype."""

    vae: WanVAE | LtxVAE
    cfg: VAEConfig | LtxVAEConfig

    @property
    def device(self) -> torch.device:
        raise NotImplementedError

    @property
    def temporal_stride(self) -> int:
        return self.cfg.temporal_stride

    @property
    def spatial_stride(self) -> int:
        return self.cfg.spatial_stride

    def decode(self, latent: Tensor) -> Tensor:
        return self.vae.decode(latent[None].to(self.device, self.vae.dtype))[0]


class WanChunkVAE(_ChunkVAE):
    """`loop.ChunkVAE` over a `WanVAE` (normalised latents, decoded frames clamped to [-1, 1])."""

    def __init__(self, vae: WanVAE) -> None:
        self.vae = vae
        self.cfg = vae.cfg

    @property
    def device(self) -> torch.device:
        return self.vae.conv2.weight.device

    @property
    def latent_channels(self) -> int:
        return self.cfg.z_dim

    def encode(self, video: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The Wan VAE's encode is deterministic (its posterior mean); `generator` is not used."""
        return self.vae.encode(video[None].to(self.device, self.vae.dtype))[0]

    def frames_for_latents(self, latents: int) -> int:
        return 1 + self.cfg.temporal_stride * (latents - 1)


def load_wan_chunk_vae(path: Path, device: str | torch.device = "cpu") -> WanChunkVAE:
    """The Pro VAE file (float32), with the sizes of a `vae_config.json` beside it when there is one."""
    sidecar = path.parent / VAE_SIDECAR
    cfg = VAEConfig.from_reference_kwargs(json.loads(sidecar.read_text())) if sidecar.is_file() else None
    return WanChunkVAE(load_wan_vae(path, cfg, device=device))


class LtxChunkVAE(_ChunkVAE):
    """`loop.ChunkVAE` over an `LtxVAE`: normalised latents; encode samples the posterior (mean + std * draw)
    from the stream's generator when `sample_posterior` (the reference's behaviour), else takes its mean."""

    def __init__(self, vae: LtxVAE, sample_posterior: bool = True) -> None:
        self.vae = vae
        self.cfg = vae.cfg
        self.sample_posterior = sample_posterior

    @property
    def device(self) -> torch.device:
        return self.vae.latents_mean.device

    @property
    def latent_channels(self) -> int:
        return self.cfg.latent_channels

    def encode(self, video: Tensor, generator: torch.Generator | None = None, noise: Tensor | None = None) -> Tensor:
        """video [3, F, H, W] -> [C, T, h, w]; `noise` [C, T, h, w]: a given posterior draw (parity tests)."""
        x = video[None].to(self.device, self.vae.dtype)
        if noise is not None:
            return self.vae.encode(x, noise=noise[None])[0]
        return self.vae.encode(x, generator=generator if self.sample_posterior else None)[0]

    def frames_for_latents(self, latents: int) -> int:
        return self.cfg.frames_for_latents(latents)


ChunkVAEs = WanChunkVAE | LtxChunkVAE


def load_ltx_chunk_vae(folder: Path, device: str | torch.device = "cpu") -> LtxChunkVAE:
    """Lite's `VAE_LTX/` folder (float32)."""
    return LtxChunkVAE(load_ltx_vae(folder, device=device))
