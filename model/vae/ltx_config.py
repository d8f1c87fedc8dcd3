"""The LTX-Video causal video VAE's sizes (SoulX-FlashHead Lite's `VAE_LTX/config.json`) and its block plan.

The release folder is a diffusers `AutoencoderKLLTXVideo` folder. The reference
(`flash_head/ltx_video/models/autoencoders/causal_video_autoencoder.py`) accepts only the LTX-Video 0.9.0
VAE config there and maps it to its own block list: per level i, `layers_per_block[i]` residual blocks, a
stride-2 causal conv in space and time where `spatio_temporal_scaling[i]`, a channel-changing residual
block where `block_out_channels` changes, and a middle stack of `layers_per_block[-1]`; pixel norm,
patch size 4, a single shared log-variance channel ("uniform"), no quant convs, a causal encoder and a
non-causal decoder with depth-to-space upsampling. Exactly that family is supported here, at any sizes
(tests use tiny ones); every other LTX-Video VAE variant (0.9.1+ timestep conditioning, noise injection,
residual upsampling, other block types) is refused by name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DIFFUSERS_CLASS = "AutoencoderKLLTXVideo"

# Keys whose value must be the 0.9.0 one (absent is fine): anything else is another VAE variant.
_FIXED = {
    "patch_size_t": 1, "encoder_causal": True, "decoder_causal": False, "timestep_conditioning": False,
    "scaling_factor": 1.0,
}
_PER_BLOCK_FIXED = {"decoder_inject_noise": False, "upsample_residual": False, "upsample_factor": 1}
_SIZES = ("in_channels", "out_channels", "latent_channels", "block_out_channels", "layers_per_block",
          "spatio_temporal_scaling", "patch_size", "resnet_norm_eps")
_MIRRORED = {"decoder_block_out_channels": "block_out_channels", "decoder_layers_per_block": "layers_per_block",
             "decoder_spatio_temporal_scaling": "spatio_temporal_scaling"}


class LtxConfigError(ValueError):
    """A VAE config this port does not support (another LTX-Video VAE variant, or not an LTX VAE)."""


@dataclass(frozen=True)
class LtxVAEConfig:
    """Sizes of an LTX-Video 0.9.0-style VAE. block_out_channels: channels per level (len L);
    layers_per_block: residual blocks per level plus the middle stack (len L + 1)."""

    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 128
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: tuple[int, ...] = (4, 3, 3, 3, 4)
    spatio_temporal_scaling: tuple[bool, ...] = (True, True, True, False)
    patch_size: int = 4
    eps: float = 1e-6

    def __post_init__(self) -> None:
        levels = len(self.block_out_channels)
        if len(self.layers_per_block) != levels + 1 or len(self.spatio_temporal_scaling) != levels:
            raise LtxConfigError(
                f"layers_per_block needs {levels + 1} entries and spatio_temporal_scaling {levels} for "
                f"{levels} levels; got {list(self.layers_per_block)} and {list(self.spatio_temporal_scaling)}")

    @property
    def compressions(self) -> int:
        return sum(self.spatio_temporal_scaling)

    @property
    def temporal_stride(self) -> int:
        return 2 ** self.compressions

    @property
    def spatial_stride(self) -> int:
        return 2 ** self.compressions * self.patch_size

    def frames_for_latents(self, latents: int) -> int:
        """A causal VAE: 1 + stride * (latents - 1) frames."""
        return 1 + self.temporal_stride * (latents - 1)

    def encoder_plan(self) -> list[tuple[str, int, int]]:
        """The encoder's blocks in order as (kind, channels_in, n): "res" n blocks at channels_in, "down" a
        stride-2 conv, "widen" one residual block channels_in -> n. The last entry is the middle stack."""
        plan: list[tuple[str, int, int]] = []
        ch = self.block_out_channels
        for i, c in enumerate(ch):
            plan.append(("res", c, self.layers_per_block[i]))
            if self.spatio_temporal_scaling[i]:
                plan.append(("down", c, c))
            if i + 1 < len(ch) and ch[i + 1] != c:
                plan.append(("widen", c, ch[i + 1]))
        plan.append(("res", ch[-1], self.layers_per_block[-1]))
        return plan

    def decoder_plan(self) -> list[tuple[str, int, int]]:
        """The decoder's blocks in order: the encoder's mirrored ("narrow" c -> c/2, "up" depth-to-space)."""
        mirror = {"res": "res", "down": "up", "widen": "narrow"}
        return [(mirror[k], (n if k == "widen" else c), (c if k == "widen" else n))
                for k, c, n in reversed(self.encoder_plan())]

    @classmethod
    def from_diffusers(cls, cfg: Mapping[str, Any], source: str = "config") -> LtxVAEConfig:
        """From an `AutoencoderKLLTXVideo` config.json; LtxConfigError naming what is not supported."""
        name = cfg.get("_class_name")
        if name != DIFFUSERS_CLASS:
            raise LtxConfigError(f"{source}: _class_name {name!r} is not a diffusers {DIFFUSERS_CLASS} config "
                                 "(SoulX-FlashHead Lite's VAE_LTX/ is one)")
        bad = [f"{k}={cfg[k]!r}" for k, v in _FIXED.items() if k in cfg and cfg[k] != v]
        bad += [f"{k}={cfg[k]!r}" for k, v in _PER_BLOCK_FIXED.items()
                if k in cfg and any(x != v for x in cfg[k])]
        bad += [f"{k}={cfg[k]!r}" for k, same in _MIRRORED.items() if k in cfg and list(cfg[k]) != list(cfg[same])]
        known = {*_FIXED, *_PER_BLOCK_FIXED, *_SIZES, *_MIRRORED}
        bad += [f"{k} (unknown key)" for k in cfg if not k.startswith("_") and k not in known]
        if bad:
            raise LtxConfigError(f"{source}: not the LTX-Video 0.9.0 VAE that SoulX-FlashHead Lite uses; unsupported: "
                                 + ", ".join(bad))
        defaults = cls()
        return cls(
            in_channels=int(cfg.get("in_channels", defaults.in_channels)),
            out_channels=int(cfg.get("out_channels", defaults.out_channels)),
            latent_channels=int(cfg.get("latent_channels", defaults.latent_channels)),
            block_out_channels=tuple(int(c) for c in cfg.get("block_out_channels", defaults.block_out_channels)),
            layers_per_block=tuple(int(n) for n in cfg.get("layers_per_block", defaults.layers_per_block)),
            spatio_temporal_scaling=tuple(bool(s) for s in cfg.get("spatio_temporal_scaling",
                                                                   defaults.spatio_temporal_scaling)),
            patch_size=int(cfg.get("patch_size", defaults.patch_size)),
            eps=float(cfg.get("resnet_norm_eps", defaults.eps)),
        )

    @classmethod
    def from_file(cls, path: str | Path) -> LtxVAEConfig:
        p = Path(path)
        p = p / "config.json" if p.is_dir() else p
        try:
            raw = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            raise LtxConfigError(f"cannot read the LTX VAE config {p}: {exc}") from exc
        if not isinstance(raw, dict):
            raise LtxConfigError(f"{p} must hold a JSON object")
        return cls.from_diffusers(raw, str(p))

    def to_diffusers(self) -> dict[str, Any]:
        """The config.json a diffusers folder of these sizes carries (the tiny release writer uses it)."""
        return {"_class_name": DIFFUSERS_CLASS, "in_channels": self.in_channels, "out_channels": self.out_channels,
                "latent_channels": self.latent_channels, "block_out_channels": list(self.block_out_channels),
                "layers_per_block": list(self.layers_per_block),
                "spatio_temporal_scaling": list(self.spatio_temporal_scaling), "patch_size": self.patch_size,
                "patch_size_t": 1, "resnet_norm_eps": self.eps, "scaling_factor": 1.0, "encoder_causal": True,
                "decoder_causal": False}
