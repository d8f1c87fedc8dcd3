"""Configuration of the Wan 2.1 causal video VAE (the one InfiniteTalk uses)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Per-channel statistics of the real VAE's latent space (the Wan wrapper's constants). The DiT works on
# (mu - mean) / std; decoding undoes it.
WAN21_LATENT_MEAN: tuple[float, ...] = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)
WAN21_LATENT_STD: tuple[float, ...] = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)


@dataclass(frozen=True)
class VAEConfig:
    """Sizes of the causal 3-D VAE.

    dim: base channel count (real: 96); stage i works at dim * dim_mult[i] channels.
    z_dim: latent channels (16). The encoder emits 2 * z_dim (mean | log-variance); only the mean is used.
    temporal_downsample: per stage transition, whether time is halved as well as space (decoder mirrors it).
    attn_scales: spatial scales (1, 1/2, ...) at which an extra attention block follows each residual block.
    latent_mean / latent_std: z_dim values each; `encode` returns (mu - mean) / std.
    """

    dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: tuple[float, ...] = ()
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    dropout: float = 0.0
    latent_mean: tuple[float, ...] = WAN21_LATENT_MEAN
    latent_std: tuple[float, ...] = WAN21_LATENT_STD

    def __post_init__(self) -> None:
        if len(self.temporal_downsample) != len(self.dim_mult) - 1:
            raise ValueError(
                f"temporal_downsample needs len(dim_mult) - 1 = {len(self.dim_mult) - 1} entries, "
                f"got {len(self.temporal_downsample)}"
            )
        if len(self.latent_mean) != self.z_dim or len(self.latent_std) != self.z_dim:
            raise ValueError(
                f"latent_mean / latent_std need z_dim = {self.z_dim} values each, "
                f"got {len(self.latent_mean)} / {len(self.latent_std)}"
            )
        if any(s == 0 for s in self.latent_std):
            raise ValueError("latent_std values must be non-zero")

    @property
    def spatial_stride(self) -> int:
        """Pixels per latent pixel along H and W (8 for the real VAE)."""
        return 2 ** (len(self.dim_mult) - 1)

    @property
    def temporal_stride(self) -> int:
        """Frames per latent frame after the first (4 for the real VAE)."""
        return 2 ** sum(bool(t) for t in self.temporal_downsample)

    def latent_frames(self, frames: int) -> int:
        """Latent frames for `frames` pixel frames: 1 + (frames - 1) // temporal_stride."""
        return 1 + (frames - 1) // self.temporal_stride

    def pixel_frames(self, latent_frames: int) -> int:
        """Decoded frames for `latent_frames` latent frames: 1 + temporal_stride * (latent_frames - 1)."""
        return 1 + self.temporal_stride * (latent_frames - 1)

    @classmethod
    def wan21(cls) -> VAEConfig:
        """The real Wan2.1_VAE.pth configuration."""
        return cls()

    @classmethod
    def tiny(cls) -> VAEConfig:
        """A few-kilobyte VAE with the real topology, for tests and CPU benchmarks."""
        return cls(dim=4)

    @classmethod
    def from_reference_kwargs(cls, kwargs: Mapping[str, Any]) -> VAEConfig:
        """Build from the reference `WanVAE_(**kwargs)` keywords (+ optional latent_mean / latent_std).

        Accepts the reference's spelling `temperal_downsample`. Missing mean/std fall back to the real ones.
        """
        known = {
            "dim", "z_dim", "dim_mult", "num_res_blocks", "attn_scales", "temperal_downsample",
            "temporal_downsample", "dropout", "latent_mean", "latent_std",
        }
        unknown = set(kwargs) - known
        if unknown:
            raise ValueError(f"unknown VAE config keys {sorted(unknown)}; expected a subset of {sorted(known)}")
        td = kwargs.get("temporal_downsample", kwargs.get("temperal_downsample", (False, True, True)))
        return cls(
            dim=int(kwargs.get("dim", 96)),
            z_dim=int(kwargs.get("z_dim", 16)),
            dim_mult=tuple(int(m) for m in kwargs.get("dim_mult", (1, 2, 4, 4))),
            num_res_blocks=int(kwargs.get("num_res_blocks", 2)),
            attn_scales=tuple(float(s) for s in kwargs.get("attn_scales", ())),
            temporal_downsample=tuple(bool(t) for t in td),
            dropout=float(kwargs.get("dropout", 0.0)),
            latent_mean=tuple(float(v) for v in kwargs.get("latent_mean", WAN21_LATENT_MEAN)),
            latent_std=tuple(float(v) for v in kwargs.get("latent_std", WAN21_LATENT_STD)),
        )
