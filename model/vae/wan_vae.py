"""The Wan 2.1 causal video VAE: batched encode / decode / streaming decode with normalised latents.

State-dict keys are the real checkpoint's (`encoder.*`, `conv1.*`, `conv2.*`, `decoder.*`), so a
safetensors conversion of `Wan2.1_VAE.pth` (or the .pth itself) loads strictly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping

import torch
from torch import Tensor, nn

from model.weights.keycheck import key_mismatches

from .config import VAEConfig
from .decoder import Decoder3d
from .encoder import Encoder3d
from .layers import CausalCache

logger = logging.getLogger(__name__)


class WanVAE(nn.Module):
    """Causal 3-D VAE. Pixels are [B, 3, T, H, W] in [-1, 1]; latents are [B, z_dim, T', H/8, W/8].

    Time is processed in the reference's causal chunks: encoder frames [0], [1..4], [5..8], ...,
    decoder one latent frame at a time, each layer carrying a small cache between chunks. Caches live
    per call, so one module can serve several streams. Build on `torch.device("meta")` and load with
    `assign=True` (see `from_state_dict`) to avoid allocating random weights first.
    """

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder3d(cfg, 2 * cfg.z_dim)
        self.conv1 = nn.Conv3d(2 * cfg.z_dim, 2 * cfg.z_dim, 1)  # moments: mean | log-variance
        self.conv2 = nn.Conv3d(cfg.z_dim, cfg.z_dim, 1)
        self.decoder = Decoder3d(cfg)

    @classmethod
    def from_state_dict(
        cls,
        cfg: VAEConfig,
        state_dict: Mapping[str, Tensor],
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> WanVAE:
        """Build without initialising weights and load `state_dict` strictly (clear error on mismatch)."""
        with torch.device("meta"):
            vae = cls(cfg)
        check_vae_keys(vae, state_dict)
        sd = {k: v.to(device=device, dtype=dtype) for k, v in state_dict.items()}
        vae.load_state_dict(sd, strict=True, assign=True)
        return vae.eval().requires_grad_(False)

    @property
    def dtype(self) -> torch.dtype:
        return self.conv2.weight.dtype

    def _latent_stats(self, device: torch.device) -> tuple[Tensor, Tensor]:
        # The reference scales by a float32 reciprocal of std (mu * (1/std), z / (1/std)); keep that rounding.
        mean = torch.tensor(self.cfg.latent_mean, dtype=torch.float32, device=device).view(1, -1, 1, 1, 1)
        std = torch.tensor(self.cfg.latent_std, dtype=torch.float32, device=device).view(1, -1, 1, 1, 1)
        return mean, 1.0 / std

    @torch.no_grad()
    def encode(self, video: Tensor, normalize: bool = True) -> Tensor:
        """video [B, 3, T, H, W] in [-1, 1] -> float32 latents [B, z_dim, 1 + (T-1)//4, H/8, W/8].

        normalize: return (mu - latent_mean) / latent_std (what the DiT consumes); False gives raw mu.
        Frames past the last full chunk (when (T-1) % 4 != 0) are ignored, as in the reference.
        """
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"encode expects video [B, 3, T, H, W], got {list(video.shape)}")
        s = self.cfg.spatial_stride
        if video.shape[-2] % s or video.shape[-1] % s:
            raise ValueError(f"H and W must be multiples of {s}, got {list(video.shape[-2:])}")
        stride = self.cfg.temporal_stride
        n_lat = self.cfg.latent_frames(video.shape[2])
        cache = CausalCache()
        chunks = []
        for i in range(n_lat):
            lo, hi = (0, 1) if i == 0 else (1 + stride * (i - 1), 1 + stride * i)
            chunks.append(self.encoder(video[:, :, lo:hi].to(self.dtype), cache))
        moments = self.conv1(torch.cat(chunks, dim=2))
        mu = moments[:, : self.cfg.z_dim].float()
        if not normalize:
            return mu
        mean, inv_std = self._latent_stats(mu.device)
        return (mu - mean) * inv_std

    @torch.no_grad()
    def decode_stream(self, z: Tensor, clamp: bool = True) -> Iterator[Tensor]:
        """Decode latent frame by latent frame, yielding float32 pixels [B, 3, n, H, W] as they are ready.

        n = 1 for the first latent frame, temporal_stride (4) for each later one. The concatenation of
        what is yielded equals `decode(z, clamp)` exactly. clamp: clip to [-1, 1] like the reference.
        """
        if z.ndim != 5 or z.shape[1] != self.cfg.z_dim:
            raise ValueError(f"decode expects latents [B, {self.cfg.z_dim}, T, h, w], got {list(z.shape)}")
        mean, inv_std = self._latent_stats(z.device)
        x = self.conv2((z.float() / inv_std + mean).to(self.dtype))
        cache = CausalCache()
        for i in range(x.shape[2]):
            out = self.decoder(x[:, :, i : i + 1], cache).float()
            yield out.clamp_(-1.0, 1.0) if clamp else out

    @torch.no_grad()
    def decode(self, z: Tensor, clamp: bool = True) -> Tensor:
        """z [B, z_dim, T', h, w] (normalised) -> float32 video [B, 3, 1 + 4(T'-1), 8h, 8w].

        clamp=True clips to [-1, 1] (the reference's `WanVAE.decode`); False returns the raw output.
        """
        b, _, t, h, w = z.shape
        s = self.cfg.spatial_stride
        out = torch.empty(b, 3, self.cfg.pixel_frames(t), h * s, w * s, dtype=torch.float32, device=z.device)
        pos = 0
        for chunk in self.decode_stream(z, clamp=clamp):
            n = chunk.shape[2]
            out[:, :, pos : pos + n] = chunk
            pos += n
        return out


def check_vae_keys(vae: nn.Module, state_dict: Mapping[str, Tensor], source: str = "state dict") -> None:
    """Raise a ValueError naming missing / unexpected / mis-shaped keys before loading."""
    mismatch = key_mismatches({k: tuple(v.shape) for k, v in vae.state_dict().items()}, state_dict)
    if mismatch:
        raise ValueError(
            f"VAE weights in {source} do not fit the config ({mismatch.describe()}). Is this a Wan 2.1 VAE file, "
            f"and does the VAEConfig (dim, z_dim, dim_mult) match it?"
        )
