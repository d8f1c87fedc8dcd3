"""One call from weight files to a ready InfiniteTalk DiT: infer its sizes, build it on meta, fill it.

It lives here, above both `model.dit` (the network) and `model.weights` (the generic loader), so that
neither of those imports the other: the loader knows nothing of the DiT, the DiT nothing of files.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from model.dit import DiTConfig, InfiniteTalkDiT
from model.dit.fp8_linear import quantize_linears_
from model.weights import LoadReport, LoraSpec, infer_dit_config, load_module, read_shapes

logger = logging.getLogger(__name__)


def load_infinitetalk_dit(
    sources: Sequence[str | Path] | str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = torch.bfloat16,
    loras: Sequence[LoraSpec | str | Path] = (),
    head_dim: int = 128,
    text_len: int = 512,
    fp8_activations: str | None = None,
    **load_kwargs,
) -> tuple[InfiniteTalkDiT, LoadReport]:
    """Build `model.dit.InfiniteTalkDiT` from the shapes in `sources` and load them into it (eval mode,
    no grad). Returns (model, LoadReport). `load_kwargs` go to `load_module` (strict, manifest, ...).

    fp8_activations: "tensor", "row" or "none" to load the block linears straight into fp8 linears
    (`model.dit.fp8_linear.FP8Linear`: byte for byte from a scaled-fp8 file, else quantised on load);
    None keeps them in `dtype`.
    """
    if isinstance(sources, (str, Path)):
        sources = [sources]
    kwargs = infer_dit_config(read_shapes(sources), head_dim=head_dim, text_len=text_len)
    logger.info("DiT config inferred from the weights: %s", kwargs)
    with torch.device("meta"):
        model = InfiniteTalkDiT(DiTConfig.from_reference_kwargs(kwargs))
    if fp8_activations is not None:
        quantize_linears_(model, activations=fp8_activations)
    model.eval().requires_grad_(False)
    report = load_module(model, sources, device=device, dtype=dtype, loras=loras, **load_kwargs)
    return model, report
