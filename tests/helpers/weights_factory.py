"""Write small checkpoints in the real-world layouts (written here independently of model.weights)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

AUDIO_RE = re.compile(r"^audio_proj\.|\.audio_cross_attn\.|\.norm_x\.")

# reference -> diffusers names (from diffusers' scripts/convert_wan_to_diffusers.py rename table).
_TO_DIFFUSERS = [
    (r"^time_embedding\.0\.", "condition_embedder.time_embedder.linear_1."),
    (r"^time_embedding\.2\.", "condition_embedder.time_embedder.linear_2."),
    (r"^text_embedding\.0\.", "condition_embedder.text_embedder.linear_1."),
    (r"^text_embedding\.2\.", "condition_embedder.text_embedder.linear_2."),
    (r"^time_projection\.1\.", "condition_embedder.time_proj."),
    (r"^img_emb\.proj\.0\.", "condition_embedder.image_embedder.norm1."),
    (r"^img_emb\.proj\.1\.", "condition_embedder.image_embedder.ff.net.0.proj."),
    (r"^img_emb\.proj\.3\.", "condition_embedder.image_embedder.ff.net.2."),
    (r"^img_emb\.proj\.4\.", "condition_embedder.image_embedder.norm2."),
    (r"^head\.head\.", "proj_out."),
    (r"^head\.modulation$", "scale_shift_table"),
    (r"\.modulation$", ".scale_shift_table"),
    (r"\.self_attn\.o\.", ".attn1.to_out.0."),
    (r"\.self_attn\.(q|k|v)\.", r".attn1.to_\1."),
    (r"\.self_attn\.", ".attn1."),
    (r"\.cross_attn\.o\.", ".attn2.to_out.0."),
    (r"\.cross_attn\.(q|k|v)\.", r".attn2.to_\1."),
    (r"\.cross_attn\.k_img\.", ".attn2.add_k_proj."),
    (r"\.cross_attn\.v_img\.", ".attn2.add_v_proj."),
    (r"\.cross_attn\.norm_k_img\.", ".attn2.norm_added_k."),
    (r"\.cross_attn\.", ".attn2."),
    (r"\.norm3\.", ".norm2."),
    (r"\.ffn\.0\.", ".ffn.net.0.proj."),
    (r"\.ffn\.2\.", ".ffn.net.2."),
]


def to_diffusers(sd: dict) -> dict:
    out = {}
    for k, v in sd.items():
        for pat, rep in _TO_DIFFUSERS:
            k2, n = re.subn(pat, rep, k, count=1)
            if n:
                k = k2
                break
        out[k] = v
    return out


def with_prefix(sd: dict, prefix: str) -> dict:
    return {prefix + k: v for k, v in sd.items()}


def base_only(sd: dict) -> dict:
    return {k: v for k, v in sd.items() if not AUDIO_RE.search(k)}


def adapter_only(sd: dict) -> dict:
    return {k: v for k, v in sd.items() if AUDIO_RE.search(k)}


def cast(sd: dict, dtype: torch.dtype) -> dict:
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}


def save(sd: dict, path: Path, metadata: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata=metadata)
    return path


def write_sharded(sd: dict, folder: Path, n: int, base: str = "diffusion_pytorch_model") -> Path:
    """HF-style shards `<base>-0000i-of-0000n.safetensors` + `<base>.safetensors.index.json`."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = list(sd)
    total = sum(v.numel() * v.element_size() for v in sd.values())
    groups: list[list[str]] = [[] for _ in range(n)]
    acc, gi = 0, 0
    for k in keys:
        groups[gi].append(k)
        acc += sd[k].numel() * sd[k].element_size()
        if acc >= total * (gi + 1) / n and gi < n - 1:
            gi += 1
    weight_map = {}
    for i, g in enumerate(groups):
        name = f"{base}-{i + 1:05d}-of-{n:05d}.safetensors"
        save({k: sd[k] for k in g}, folder / name)
        weight_map.update({k: name for k in g})
    index = folder / f"{base}.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    return index


def is_linear_weight(key: str, t: torch.Tensor) -> bool:
    return key.endswith(".weight") and t.ndim == 2


def fp8_plain(sd: dict, fmt: torch.dtype = torch.float8_e4m3fn) -> dict:
    """Linear weights cast to fp8, everything else kept (as in `..._fp8_e4m3fn.safetensors`)."""
    return {k: (v.to(fmt) if is_linear_weight(k, v) else v) for k, v in sd.items()}


def fp8_scaled(sd: dict, fmt: torch.dtype = torch.float8_e4m3fn, style: str = "legacy") -> dict:
    """Per-tensor absmax scaling: q = w / s (s = amax / fp8 max), stored with its scale.

    legacy: `<layer>.scale_weight` (+ `scale_input`, marker `scaled_fp8`); comfy: `<layer>.weight_scale` +
    `<layer>.comfy_quant` JSON bytes; kijai: `<layer>.weight_scale` + marker.
    """
    fmax = torch.finfo(fmt).max
    out = {}
    for k, v in sd.items():
        if not is_linear_weight(k, v):
            out[k] = v
            continue
        layer = k[: -len(".weight")]
        s = v.abs().max().clamp(min=1e-12) / fmax
        out[k] = (v / s).to(fmt)
        if style == "legacy":
            out[layer + ".scale_weight"] = s.reshape(1).float()
            out[layer + ".scale_input"] = torch.ones(())
        else:
            out[layer + ".weight_scale"] = s.reshape(()).float()
        if style == "comfy":
            out[layer + ".comfy_quant"] = torch.tensor(list(json.dumps({"format": str(fmt)[6:]}).encode()), dtype=torch.uint8)
    if style in ("legacy", "kijai"):
        out["scaled_fp8"] = torch.empty(0, dtype=fmt)
    return out


def fp8_roundtrip(sd: dict, fmt: torch.dtype, scaled: bool) -> dict:
    """What an exact dequantisation of fp8_plain/fp8_scaled must give back (float32)."""
    fmax = torch.finfo(fmt).max
    out = {}
    for k, v in sd.items():
        if not is_linear_weight(k, v):
            out[k] = v
        elif scaled:
            s = v.abs().max().clamp(min=1e-12) / fmax
            out[k] = (v / s).to(fmt).float() * s.float()
        else:
            out[k] = v.to(fmt).float()
    return out
