"""fp8 checkpoints: plain e4m3fn / e5m2 casts and the "scaled" variants, dequantised at load time.

Facts (read from ComfyUI comfy/utils.py `convert_old_quants`, comfy/ops.py, and ComfyUI-WanVideoWrapper
nodes_model_loading.py / custom_linear.py):
- plain fp8 files (e.g. `..._fp8_e4m3fn.safetensors`): Linear weights stored as float8, everything else
  (norms, biases, modulation) in a wider float; value = weight.to(float).
- legacy "scaled fp8" files: a marker tensor `scaled_fp8` (its dtype names the fp8 format; an fp32 marker
  means e4m3fn) and per layer `<layer>.scale_weight` (a scalar) and `<layer>.scale_input` (for fp8 matmul of
  activations; irrelevant once dequantised). value = weight.to(float) * scale_weight.
- Kijai's wrapper also accepts `<layer>.weight_scale` as a synonym of `scale_weight`.
- newer ComfyUI "mixed precision" files: `<layer>.comfy_quant` (uint8 bytes of a JSON {"format": ...}) or
  safetensors metadata `_quantization_metadata` {"layers": {layer: {"format": ...}}}, with
  `<layer>.weight_scale` (and `<layer>.input_scale`). Formats float8_e4m3fn / float8_e5m2 dequantise as
  weight * weight_scale; others (nvfp4, int8...) are refused with a clear error.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch

from model.fp8 import is_fp8

from .errors import WeightLoadError
from .sources import TensorInfo

_FP8_FORMATS = {"float8_e4m3fn": torch.float8_e4m3fn, "float8_e5m2": torch.float8_e5m2}
_SCALE_SUFFIXES = (".scale_weight", ".weight_scale")
_AUX_SUFFIXES = (".scale_input", ".input_scale", ".comfy_quant")
MARKER = "scaled_fp8"


@dataclass(frozen=True)
class QuantPlan:
    """How one file's fp8 tensors turn back into floats (all keys after prefix stripping)."""

    scheme: str = "none"  # none | fp8 | fp8-scaled | comfy-quant
    scales: Mapping[str, str] = field(default_factory=dict)  # "<layer>.weight" -> its scale tensor key
    aux: frozenset[str] = frozenset()  # bookkeeping keys that are not model tensors (consumed here)


def refuse_unsupported(keys: Iterable[str], file: str = "") -> None:
    """Formats recognisable from key names alone that we cannot dequantise."""
    if any(k.endswith(("._data", "._scale")) for k in keys):
        raise WeightLoadError(
            f"{file} is an optimum-quanto quantized checkpoint (keys like '<layer>.weight._data'), e.g. "
            "InfiniteTalk's quant_models/*.safetensors; this loader cannot read that format. Use the bf16/fp16 "
            "release or a ComfyUI fp8 (e4m3fn, scaled or not) file.",
            files=[file],
        )


def plan_quantization(
    infos: Mapping[str, TensorInfo],
    read_small: Callable[[str], torch.Tensor],
    metadata: Mapping[str, str],
    *,
    file: str = "",
) -> QuantPlan:
    """Work out which tensors are scales/markers and which weight each scale belongs to.

    `infos` are keyed by the (prefix-stripped) names; `read_small` reads a tiny tensor (a comfy_quant JSON).
    """
    keys = set(infos)
    aux: set[str] = set()
    scales: dict[str, str] = {}
    scheme = "fp8" if any(is_fp8(i.dtype) for i in infos.values()) else "none"

    refuse_unsupported(keys, file)
    layer_formats: dict[str, str] = {}
    qmeta = metadata.get("_quantization_metadata")
    if qmeta:
        try:
            layers = json.loads(qmeta).get("layers", {})
            layer_formats.update({k: (v["format"] if isinstance(v, dict) else str(v)) for k, v in layers.items()})
        except (json.JSONDecodeError, AttributeError, KeyError, TypeError) as e:
            raise WeightLoadError(f"{file}: unreadable _quantization_metadata ({e})", files=[file]) from e
    for k in keys:
        if k.endswith(".comfy_quant"):
            layer = k[: -len(".comfy_quant")]
            try:
                conf = json.loads(bytes(read_small(k).to(torch.uint8).tolist()).decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise WeightLoadError(f"{file}: unreadable {k} ({e})", files=[file]) from e
            layer_formats[layer] = conf.get("format", "") if isinstance(conf, dict) else str(conf)
    if layer_formats:
        scheme = "comfy-quant"
        for layer, fmt in layer_formats.items():
            if fmt not in _FP8_FORMATS:
                raise WeightLoadError(
                    f"{file}: layer {layer} uses the ComfyUI quantization format {fmt!r}, which this loader "
                    "cannot dequantize (it handles float8_e4m3fn and float8_e5m2). Use a bf16/fp16 or fp8 file.",
                    files=[file],
                )

    if MARKER in keys:
        aux.add(MARKER)
        if scheme != "comfy-quant":
            scheme = "fp8-scaled"
    for k in keys:
        if k.endswith(_AUX_SUFFIXES):
            aux.add(k)
        for suffix in _SCALE_SUFFIXES:
            if k.endswith(suffix):
                weight = k[: -len(suffix)] + ".weight"
                aux.add(k)
                if weight in keys:
                    scales[weight] = k
                    if scheme in ("none", "fp8"):
                        scheme = "fp8-scaled"
    return QuantPlan(scheme=scheme, scales=scales, aux=frozenset(aux))


def dequantize(weight: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """fp8 (or any) weight [out, ...] times a per-tensor or per-output-channel scale -> float32."""
    w = weight.to(torch.float32, copy=True)
    if scale is None:
        return w
    s = scale.to(device=w.device, dtype=torch.float32)
    if s.numel() == 1:
        return w.mul_(s.reshape(()))
    if w.ndim >= 1 and s.numel() == w.shape[0]:
        return w.mul_(s.reshape((w.shape[0],) + (1,) * (w.ndim - 1)))
    raise WeightLoadError(
        f"scale of shape {list(scale.shape)} does not fit a weight of shape {list(weight.shape)} "
        "(expected one value, or one per output channel)"
    )
