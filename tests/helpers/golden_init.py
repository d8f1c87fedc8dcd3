"""The golden generator's random initialisation, for any module (golden README, "Weight initialisation used").

Random tiny models made this way are of the same family as the golden files: the hidden golden set
was made the same way with other seeds and sizes, so a bound checked on a few of them is not a
bound tuned on one file.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def golden_init_(model: nn.Module, seed: int) -> nn.Module:
    """Overwrite every parameter from one seeded generator, modules in `named_modules()` order, each
    module's own parameters: norm scales (`weight` / `gamma` of a *Norm* module) 1 + 0.1 N; biases
    0.05 N; `modulation` 0.1 N; weight-norm magnitudes (`original0`) 1 + 0.1 N; other >= 2-D weights
    N / sqrt(fan_in) (elements of one output slice); anything else 0.1 N."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, module in model.named_modules():
            is_norm = "Norm" in type(module).__name__
            for name, p in module.named_parameters(recurse=False):
                n = torch.randn(p.shape, generator=g)
                if (is_norm and name in ("weight", "gamma")) or name == "original0":
                    p.copy_(1 + 0.1 * n)
                elif name == "bias":
                    p.copy_(0.05 * n)
                elif name == "modulation":
                    p.copy_(0.1 * n)
                elif p.dim() >= 2:
                    p.copy_(n / math.sqrt(p[0].numel()))
                else:
                    p.copy_(0.1 * n)
    return model
