"""Sizes of the InfiniteTalk/MultiTalk Wan2.1 I2V diffusion transformer, as data.

Field names follow the reference `WanModel` keyword arguments, so a checkpoint's `config.json`
(or the golden `dit_config.json`) maps onto it with `DiTConfig.from_reference_kwargs`. Values the
reference hard-wires inside its modules (image-token count, wav2vec layer count and width, the
multi-speaker audio RoPE buckets, ...) are fields here too, defaulting to the hard-wired values.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

# Keyword defaults of the reference `WanModel.__init__` (used for keys a config file leaves out).
_REFERENCE_DEFAULTS: dict[str, Any] = {
    "model_type": "i2v",
    "patch_size": (1, 2, 2),
    "text_len": 512,
    "in_dim": 16,
    "dim": 2048,
    "ffn_dim": 8192,
    "freq_dim": 256,
    "text_dim": 4096,
    "out_dim": 16,
    "num_heads": 16,
    "num_layers": 32,
    "window_size": (-1, -1),
    "qk_norm": True,
    "cross_attn_norm": True,
    "eps": 1e-6,
    "audio_window": 5,
    "intermediate_dim": 512,
    "output_dim": 768,
    "context_tokens": 32,
    "vae_scale": 4,
    "norm_input_visual": True,
    "norm_output_audio": True,
}

# Reference kwargs that carry no size (or only one allowed value) and are checked, not stored.
_CHECKED_ONLY = {"model_type", "window_size", "weight_init"}


@dataclass(frozen=True)
class DiTConfig:
    """Every size of the DiT. Defaults are the real InfiniteTalk 14B (480p/720p) model.

    Reference-configurable (WanModel kwargs): patch_size .. norm_output_audio.
    Hard-wired in the reference, configurable here: clip_dim, clip_tokens, audio_layers, audio_width,
    audio_rope_class_range, audio_rope_class_interval, audio_norm_eps, img_norm_eps, rope_theta,
    ref_attn_head_groups.
    """

    dim: int = 5120
    ffn_dim: int = 13824
    freq_dim: int = 256
    text_dim: int = 4096
    text_len: int = 512
    in_dim: int = 36
    out_dim: int = 16
    num_heads: int = 40
    num_layers: int = 40
    patch_size: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6
    qk_norm: bool = True
    cross_attn_norm: bool = True
    # audio adapter
    audio_window: int = 5
    intermediate_dim: int = 512
    output_dim: int = 768
    context_tokens: int = 32
    vae_scale: int = 4
    norm_input_visual: bool = True
    norm_output_audio: bool = True
    # hard-wired in the reference
    clip_dim: int = 1280
    clip_tokens: int = 257
    audio_layers: int = 12
    audio_width: int = 768
    audio_rope_class_range: int = 24
    audio_rope_class_interval: int = 4
    audio_norm_eps: float = 1e-5
    img_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    ref_attn_head_groups: int = 2

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even for RoPE (dim / num_heads)")
        if len(self.patch_size) != 3:
            raise ValueError(f"patch_size must have 3 entries (t, h, w), got {self.patch_size}")
        if self.in_dim <= self.out_dim:
            raise ValueError(f"in_dim {self.in_dim} must exceed out_dim {self.out_dim} (x and y are concatenated)")
        if self.audio_window < 1 or self.audio_window % 2 == 0:
            raise ValueError(f"audio_window must be odd and >= 1, got {self.audio_window}")
        if self.vae_scale < 2:
            raise ValueError(f"vae_scale must be >= 2, got {self.vae_scale}")
        if self.ref_attn_head_groups < 1 or self.num_heads < self.ref_attn_head_groups:
            raise ValueError(
                f"ref_attn_head_groups {self.ref_attn_head_groups} must be in [1, num_heads={self.num_heads}]"
            )

    # ----------------------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def y_dim(self) -> int:
        """Channels of the conditioning input `y`: 4 frame-mask channels + the VAE latent."""
        return self.in_dim - self.out_dim

    @property
    def audio_window_vf(self) -> int:
        """Audio windows kept per latent frame after the first (3 + (vae_scale-2) + 3 for window 5)."""
        return self.audio_window + self.vae_scale - 1

    def video_frames(self, latent_frames: int) -> int:
        """Video (audio) frames F that `latent_frames` latent frames stand for: 1 + vae_scale*(T-1)."""
        return 1 + self.vae_scale * (latent_frames - 1)

    # ----------------------------------------------------------------------------------------
    @classmethod
    def infinitetalk_14b(cls) -> DiTConfig:
        """The released InfiniteTalk / MultiTalk 14B model (Wan2.1-I2V-14B + audio adapter)."""
        return cls()

    @classmethod
    def tiny(cls) -> DiTConfig:
        """A few-MB model for tests: small everywhere except the fixed audio/CLIP input widths."""
        return cls(
            dim=64, ffn_dim=128, freq_dim=32, text_dim=32, text_len=16, num_heads=4, num_layers=2,
            intermediate_dim=8, output_dim=32, context_tokens=4,
        )

    @classmethod
    def from_reference_kwargs(cls, kwargs: Mapping[str, Any], **overrides: Any) -> DiTConfig:
        """Build from the reference `WanModel(**kwargs)` arguments (a checkpoint's config.json).

        Missing keys take the reference constructor defaults (not this class's 14B defaults),
        so a config file means exactly what it meant to the reference. Keys starting with "_"
        (diffusers metadata) are ignored; unknown keys are logged and ignored. `overrides` set
        fields directly (e.g. the hard-wired ones).
        """
        merged = dict(_REFERENCE_DEFAULTS)
        names = {f.name for f in dataclasses.fields(cls)}
        for key, value in kwargs.items():
            if key.startswith("_"):
                continue
            if key not in names and key not in _CHECKED_ONLY:
                logger.warning("DiT config key %r is not a WanModel size; ignored", key)
                continue
            merged[key] = value
        if merged["model_type"] != "i2v":
            raise ValueError(
                f"model_type {merged['model_type']!r}: InfiniteTalk needs the i2v model (Wan2.1-I2V-14B)"
            )
        if tuple(merged["window_size"]) != (-1, -1):
            raise ValueError(f"window_size {merged['window_size']} is not supported (only global attention)")
        fields = {k: v for k, v in merged.items() if k in names}
        fields["patch_size"] = tuple(int(p) for p in fields["patch_size"])
        fields.update(overrides)
        return cls(**fields)
