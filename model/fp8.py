"""fp8 numbers: the two formats, their range, quantisation with a scale, and its rounding error bound.

Pure tensor math, below both users: the weight loader (`model.weights`, which quantises checkpoints
into fp8 linears on the way in) and the DiT's fp8 linears (`model.dit.fp8_linear`, which quantise
activations per call). Keeping it here lets neither of those packages import the other.
"""

from __future__ import annotations

import torch

FP8_DTYPES: frozenset[torch.dtype] = frozenset({torch.float8_e4m3fn, torch.float8_e5m2})


def is_fp8(dtype: torch.dtype) -> bool:
    return dtype in FP8_DTYPES


def fp8_max(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).max)


def quantize_fp8(
    x: torch.Tensor, dtype: torch.dtype = torch.float8_e4m3fn, dim: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """x -> (q, scale) with x ~= q.float() * scale, the fp8 range used to the full (amax -> max).

    dim None: one float32 scale for the tensor (shape []); else one per slice along `dim`
    (keepdim, e.g. dim=-1 on activations [M, K] gives per-row scales [M, 1]). Round to nearest.
    """
    amax = x.abs().amax() if dim is None else x.abs().amax(dim=dim, keepdim=True)
    lim = fp8_max(dtype)
    scale = (amax.float() / lim).clamp_min(torch.finfo(torch.float32).tiny)
    q = (x.float() / scale).clamp_(-lim, lim).to(dtype)
    return q, scale


def fp8_error_bound(reference: torch.Tensor, dtype: torch.dtype, scale: float = 1.0) -> torch.Tensor:
    """Per-element bound on |dequant(quant(x)) - x| for round-to-nearest into `dtype` with a scale.

    Normal numbers: half an ulp = |x| * 2**-(mantissa_bits+1). Subnormals (|x/scale| < 2**min_exp):
    half the smallest subnormal step, times the scale.
    """
    mantissa = {torch.float8_e4m3fn: 3, torch.float8_e5m2: 2}[dtype]
    tiny = torch.finfo(dtype).smallest_normal  # 2**-6 for e4m3fn, 2**-14 for e5m2
    sub_step = tiny * 2.0**-mantissa
    rel = reference.abs().to(torch.float32) * 2.0 ** -(mantissa + 1)
    return torch.clamp(rel, min=0.5 * sub_step * scale) + 1e-12
