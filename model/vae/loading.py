"""Load Wan VAE weights from the files users have (Wan2.1_VAE.pth, its safetensors repackagings)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from .config import VAEConfig
from .wan_vae import WanVAE

logger = logging.getLogger(__name__)

# Repackagings sometimes nest the VAE under one of these (e.g. ComfyUI wrappers use "model.").
_PREFIXES = ("model.", "vae.", "first_stage_model.")


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """Read a .safetensors or a torch pickle (.pth/.pt/.bin, loaded with weights_only=True) onto the CPU."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"weight file {p} not found")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p))
    sd = torch.load(str(p), map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
        sd = sd["state_dict"]
    if not isinstance(sd, Mapping):
        raise ValueError(f"{p} does not hold a state dict (got {type(sd).__name__})")
    return dict(sd)


def strip_vae_prefix(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop a wrapper prefix ("model.", "vae.", ...) shared by every key; otherwise return keys unchanged."""
    for prefix in _PREFIXES:
        if state_dict and all(k.startswith(prefix) for k in state_dict):
            return {k[len(prefix) :]: v for k, v in state_dict.items()}
    return dict(state_dict)


def load_wan_vae(
    path: str | Path,
    cfg: VAEConfig | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> WanVAE:
    """Build a `WanVAE` (default: the real Wan 2.1 config) and load `path` strictly."""
    cfg = cfg or VAEConfig.wan21()
    sd = strip_vae_prefix(load_state_dict_file(path))
    logger.info("loading Wan VAE from %s (%d tensors) to %s %s", path, len(sd), device, dtype)
    try:
        return WanVAE.from_state_dict(cfg, sd, device=device, dtype=dtype)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
