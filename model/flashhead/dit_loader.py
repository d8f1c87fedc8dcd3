"""From a FlashHead model folder (config.json + diffusers safetensors) to a ready `FlashHeadDiT`.

Here, above `model.dit` and `model.weights`, so that neither imports the other. The reference's
unused `text_embedding.*` and `audio_emb.*` tensors are skipped by name and never read.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from model.dit.flashhead import FLASHHEAD_UNUSED_PREFIXES, FlashHeadDiT
from model.weights import LoadReport, load_module

from .config import FlashHeadConfig

logger = logging.getLogger(__name__)


def load_flashhead_dit(
    cfg: FlashHeadConfig,
    sources: Sequence[str | Path] | str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = torch.bfloat16,
    **load_kwargs,
) -> tuple[FlashHeadDiT, LoadReport]:
    """Build the DiT of `cfg` on the meta device and fill it from `sources` (files or the model folder);
    eval mode, no grad. Every tensor the model needs must be there (strict); `load_kwargs` go to
    `load_module` (manifest, reader, ...)."""
    with torch.device("meta"):
        model = FlashHeadDiT(cfg.dit)
    model.eval().requires_grad_(False)
    ignore = tuple(load_kwargs.pop("ignore", ())) + FLASHHEAD_UNUSED_PREFIXES
    report = load_module(model, sources, device=device, dtype=dtype, ignore=ignore, **load_kwargs)
    logger.info("FlashHead DiT loaded: %d layers, dim %d", cfg.dit.num_layers, cfg.dit.dim)
    return model, report
