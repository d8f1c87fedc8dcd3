"""fp8 linears for the DiT's big matmuls: e4m3 weights with a per-tensor scale, fp8 activations.

`FP8Linear` keeps `weight` as float8_e4m3fn [out, in] and `weight_scale` (float32, shape []) with
W ~= weight * weight_scale. Each call quantises the activations dynamically (one scale per tensor,
or per row = per token) and, on CUDA GPUs with fp8 tensor cores (sm89+, e.g. H100), multiplies with
`torch._scaled_mm` (fp8 x fp8 -> bf16, scales applied in the epilogue). Elsewhere it emulates the
same arithmetic: dequantise both operands to float32 and matmul, so CPU tests see the fp8 rounding.
activations="none" keeps activations in their dtype (weight-only fp8: half the weight memory, no
fp8 tensor cores needed; the weight is dequantised per call).

The fast path is built so the quantiser costs less than the fp8 matmul saves: the max-abs is one
read (a norm, no temporary), the quantising pass is one fused kernel on CUDA (torch.compile; eager
elsewhere), the bias is added in the matmul's epilogue where the kernel takes one (probed once),
fast accumulation is on (as inference fp8 kernels commonly run), and the weight's scale operand is
made once per weight. `bench/fp8_linears.py` measures it against bf16 per block linear.

Checkpoints: build the DiT on meta, `quantize_linears_` it, then `model.weights.load_module` fills
the fp8 weights and scales straight from a ComfyUI "scaled fp8" file (or quantises bf16 weights
on the way in). Or quantise a loaded model in place with the same call.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from model.fp8 import fp8_max, quantize_fp8

logger = logging.getLogger(__name__)

ACTIVATION_MODES = ("tensor", "row", "none")

# The big per-block linears (names inside a DiTBlock); embeddings, head, time MLPs, the audio
# projector and the CLIP projector stay in their dtype (small, and sensitive to rounding).
BLOCK_LINEARS: tuple[str, ...] = (
    "self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
    "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o", "cross_attn.k_img", "cross_attn.v_img",
    "ffn.0", "ffn.2",
    "audio_cross_attn.q_linear", "audio_cross_attn.kv_linear", "audio_cross_attn.proj",
)

_SCALED_MM_OK: dict[int, bool] = {}
_BIAS_IN_EPILOGUE: dict[tuple[str, str], bool] = {}  # (activations mode, device type) -> the kernel takes a bias


def _quantize_eager(x: torch.Tensor, scale: torch.Tensor, lim: float, dtype: torch.dtype) -> torch.Tensor:
    return (x.float() / scale).clamp(-lim, lim).to(dtype)


_quantize_fused = None


def quantize_activations(x: torch.Tensor, dtype: torch.dtype, rowwise: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] -> (fp8 [M, K], float32 scale [] or [M, 1]): `quantize_fp8`'s numbers in two passes.

    One reduction for the max-abs (an inf-norm reads x once, no |x| temporary) and one elementwise
    pass, fused by torch.compile on CUDA (the eager pass makes three: upcast, divide, clamp and cast).
    """
    global _quantize_fused
    amax = torch.linalg.vector_norm(x, float("inf"), dim=-1 if rowwise else None, keepdim=rowwise,
                                    dtype=torch.float32)
    lim = fp8_max(dtype)
    scale = (amax / lim).clamp_min(torch.finfo(torch.float32).tiny)
    if x.is_cuda:
        if _quantize_fused is None:
            _quantize_fused = torch.compile(_quantize_eager, dynamic=True)
        return _quantize_fused(x, scale, lim, dtype), scale
    return _quantize_eager(x, scale, lim, dtype), scale


def scaled_mm_available(device: torch.device) -> bool:
    """fp8 tensor-core matmul usable on this device (CUDA, compute capability >= 8.9)."""
    if device.type != "cuda" or not torch.cuda.is_available() or not hasattr(torch, "_scaled_mm"):
        return False
    index = device.index if device.index is not None else torch.cuda.current_device()
    ok = _SCALED_MM_OK.get(index)
    if ok is None:
        ok = _SCALED_MM_OK[index] = torch.cuda.get_device_capability(index) >= (8, 9)
    return ok


class FP8Linear(nn.Module):
    """y = x W^T + b with W stored as e4m3 + per-tensor scale (state-dict keys weight, weight_scale, bias)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        activations: str = "tensor",
        fp8_dtype: torch.dtype = torch.float8_e4m3fn,
        bias_dtype: torch.dtype = torch.bfloat16,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if activations not in ACTIVATION_MODES:
            raise ValueError(f"activations must be one of {ACTIVATION_MODES}, got {activations!r}")
        self.in_features, self.out_features = in_features, out_features
        self.activations = activations
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=fp8_dtype, device=device),
                                   requires_grad=False)
        self.register_buffer("weight_scale", torch.ones((), dtype=torch.float32, device=device))
        self.bias = nn.Parameter(torch.empty(out_features, dtype=bias_dtype, device=device), requires_grad=False) \
            if bias else None
        self.fast_accum = True  # fp8 tensor cores accumulate without periodic fp32 promotion (inference speed)
        self._fast_failed = False
        self._scale_b: tuple[tuple, torch.Tensor] | None = None  # (weight_scale version, operand)

    @classmethod
    def from_linear(cls, linear: nn.Linear, activations: str = "tensor",
                    fp8_dtype: torch.dtype = torch.float8_e4m3fn) -> FP8Linear:
        """Quantise a linear's weight per tensor (on the meta device: an empty fp8 linear to load into)."""
        w = linear.weight
        bias_dtype = linear.bias.dtype if linear.bias is not None else w.dtype
        out = cls(linear.in_features, linear.out_features, linear.bias is not None, activations=activations,
                  fp8_dtype=fp8_dtype, bias_dtype=bias_dtype, device=w.device)
        if w.is_meta:
            return out
        with torch.no_grad():
            q, scale = quantize_fp8(w.detach(), fp8_dtype)
            out.weight.copy_(q)
            out.weight_scale.copy_(scale)
            if linear.bias is not None:
                out.bias.copy_(linear.bias.detach())
        return out

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001 - nn.Module's signature
        """`.to(dtype)` / `.half()` on the model must not touch the fp8 weight or its float32 scale."""
        w_dtype, scale = self.weight.dtype, self.weight_scale
        super()._apply(fn, recurse)
        if self.weight.dtype != w_dtype:  # fp8 -> wider float -> fp8 is exact
            self.weight.data = self.weight.data.to(w_dtype)
        if self.weight_scale.dtype != torch.float32:
            self.weight_scale = scale.to(device=self.weight_scale.device, dtype=torch.float32)
        return self

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, weight={self.weight.dtype}, activations={self.activations}")

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return (self.weight.to(torch.float32) * self.weight_scale).to(dtype)

    def quantize_input(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [M, K] -> (fp8 [M, K], float32 scale [] or [M, 1]) per `activations`."""
        return quantize_fp8(x, self.weight.dtype, dim=-1 if self.activations == "row" else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [..., in] -> [..., out] (x's dtype)
        if self.activations != "none" and not self._fast_failed and scaled_mm_available(x.device):
            try:
                return self._scaled_mm(x)
            except torch.OutOfMemoryError:
                raise  # not a kernel limitation: emulating (fp32 weights) would need more memory still
            except RuntimeError as e:  # shapes/layouts this torch build's kernel refuses: decided once
                self._fast_failed = True
                logger.warning("torch._scaled_mm failed for %s (%s); emulating fp8 from now on", self.extra_repr(), e)
        return self.emulate(x)

    def emulate(self, x: torch.Tensor) -> torch.Tensor:
        """The fp8 arithmetic in float32: dequantised activations (unless "none") times the dequantised weight."""
        bias = self.bias
        if self.activations == "none":
            w = self.dequantized_weight(x.dtype)
            return F.linear(x, w, bias.to(x.dtype) if bias is not None else None)
        xq, xs = self.quantize_input(x.reshape(-1, self.in_features))
        xd = xq.to(torch.float32) * xs
        y = F.linear(xd, self.dequantized_weight(torch.float32), bias.float() if bias is not None else None)
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def _weight_scale_operand(self) -> torch.Tensor:
        """The matmul's scale_b, made once per weight scale (row-wise kernels want a [1, out] row)."""
        key = (self.weight_scale._version, self.weight_scale.data_ptr())
        if self._scale_b is None or self._scale_b[0] != key:
            s = self.weight_scale
            if self.activations == "row":
                s = s.reshape(1, 1).expand(1, self.out_features).contiguous()
            self._scale_b = (key, s)
        return self._scale_b[1]

    def _scaled_mm(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        xq, xs = quantize_activations(x.reshape(-1, self.in_features), self.weight.dtype, self.activations == "row")
        out_dtype = x.dtype if x.dtype in (torch.bfloat16, torch.float16) else torch.bfloat16
        sw = self._weight_scale_operand()
        bias = None if self.bias is None else self.bias.to(out_dtype)
        mode = (self.activations, x.device.type)
        fused = bias is not None and _BIAS_IN_EPILOGUE.get(mode, True)
        try:
            y = torch._scaled_mm(xq, self.weight.t(), scale_a=xs, scale_b=sw, bias=bias if fused else None,
                                 out_dtype=out_dtype, use_fast_accum=self.fast_accum)
        except torch.OutOfMemoryError:
            raise
        except RuntimeError:
            if not fused:
                raise
            _BIAS_IN_EPILOGUE[mode] = False  # this build's kernel takes no bias in this scaling mode
            logger.info("torch._scaled_mm takes no bias with %s scales here: bias added separately", mode[0])
            return self._scaled_mm(x)
        if bias is not None and not fused:
            y = y + bias
        return y.to(x.dtype).reshape(*lead, self.out_features)


def quantize_linears_(
    model: nn.Module,
    names: Iterable[str] = BLOCK_LINEARS,
    *,
    activations: str = "tensor",
    fp8_dtype: torch.dtype = torch.float8_e4m3fn,
) -> int:
    """Replace the named linears of every DiT block (`model.blocks[i].<name>`) by FP8Linear, in place.

    Works on a loaded model (weights quantised now) and on a meta-built one (then load the
    checkpoint with `model.weights.load_module`). Returns how many linears were replaced.
    """
    wanted = tuple(names)
    count = 0
    for block in model.blocks:
        for name in wanted:
            parent_name, _, attr = name.rpartition(".")
            parent = block.get_submodule(parent_name) if parent_name else block
            child = getattr(parent, attr)
            if isinstance(child, FP8Linear):
                continue
            if not isinstance(child, nn.Linear):
                raise TypeError(f"blocks.*.{name} is a {type(child).__name__}, not nn.Linear")
            setattr(parent, attr, FP8Linear.from_linear(child, activations, fp8_dtype))
            count += 1
    logger.info("fp8: %d block linears now e4m3 (activations %s)", count, activations)
    return count
