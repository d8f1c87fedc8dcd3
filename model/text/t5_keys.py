"""umT5 encoder weight layouts -> the key names of `transformers.UMT5EncoderModel`.

Layouts people have:
* the original Wan release `models_t5_umt5-xxl-enc-bf16.pth` (reference names, `wan/modules/t5.py`):
  token_embedding.weight, blocks.N.{norm1, attn.{q,k,v,o}, pos_embedding.embedding, norm2,
  ffn.{gate.0, fc1, fc2}}.weight, norm.weight (same names also appear repackaged as safetensors);
* ComfyUI / HF single files (`umt5_xxl_fp16.safetensors`, ...): HF names
  shared.weight, encoder.block.N.layer.0.SelfAttention.*, encoder.block.N.layer.1.DenseReluDense.*,
  encoder.final_layer_norm.weight; fp8 "scaled" variants add a `scaled_fp8` marker and a
  `<layer>.scale_weight` per quantised weight.

Architecture facts that make the mapping a pure rename (checked in the tests): both are pre-norm
RMS-norm blocks (no mean, no bias, eps 1e-6), attention without 1/sqrt(d) scaling, a relative
position bias table [32 buckets, heads] in EVERY layer (umT5, unlike T5's shared one; bidirectional,
max distance 128), and a gated-GELU(tanh) FFN: out = fc2(fc1(x) * gelu(gate(x))), i.e.
gate -> wi_0 (the activated branch), fc1 -> wi_1 (the linear branch), fc2 -> wo.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

import torch
from transformers import UMT5Config

log = logging.getLogger(__name__)

REFERENCE = "reference"
HF = "hf"

# Per-block names: reference suffix after "blocks.N." -> HF suffix after "encoder.block.N.".
BLOCK_KEY_MAP: dict[str, str] = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}
GLOBAL_KEY_MAP: dict[str, str] = {
    "token_embedding.weight": "shared.weight",
    "norm.weight": "encoder.final_layer_norm.weight",
}
REFERENCE_BLOCK_PREFIX = "blocks.{}."
HF_BLOCK_PREFIX = "encoder.block.{}."
HF_EMBED_ALIASES = ("shared.weight", "encoder.embed_tokens.weight")

_REF_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_HF_BLOCK = re.compile(r"^encoder\.block\.(\d+)\.(.+)$")
# Keys that may ride along in single-file checkpoints and are not encoder weights.
_IGNORED = re.compile(r"^(decoder\.|lm_head\.|spiece_model$|scaled_fp8$)|\.scale_input$")


class T5KeyError(KeyError):
    """A state dict is not an umT5 encoder in a layout we know, or lacks weights."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


def strip_prefix(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes some repackagings add (`model.`, `text_encoder.`, `t5.`, `umt5.`)."""
    out = dict(sd)
    for prefix in ("model.", "text_encoder.", "t5xxl.transformer.", "umt5.", "t5."):
        if out and all(k.startswith(prefix) for k in out):
            out = {k[len(prefix):]: v for k, v in out.items()}
    return out


def detect_layout(sd: Mapping[str, torch.Tensor]) -> str:
    """REFERENCE or HF, from the key names; raises T5KeyError for anything else."""
    if any(_REF_BLOCK.match(k) for k in sd) or "token_embedding.weight" in sd:
        if "pos_embedding.embedding.weight" in sd:
            raise T5KeyError("this T5 has one shared relative position bias (plain T5), not umT5's per-layer bias")
        return REFERENCE
    if any(_HF_BLOCK.match(k) for k in sd):
        return HF
    raise T5KeyError(f"not an umT5 encoder state dict: keys look like {sorted(sd)[:5]}")


def reference_to_hf(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a reference (`wan/modules/t5.py` T5Encoder) state dict to UMT5EncoderModel names."""
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in sd.items():
        m = _REF_BLOCK.match(key)
        if m and m.group(2) in BLOCK_KEY_MAP:
            out[HF_BLOCK_PREFIX.format(m.group(1)) + BLOCK_KEY_MAP[m.group(2)]] = value
        elif key in GLOBAL_KEY_MAP:
            out[GLOBAL_KEY_MAP[key]] = value
        else:
            unknown.append(key)
    if unknown:
        raise T5KeyError(f"unknown keys for the reference umT5 layout: {unknown[:8]}")
    if "shared.weight" in out:
        out["encoder.embed_tokens.weight"] = out["shared.weight"]
    return out


def hf_to_reference(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of `reference_to_hf` (for writing reference-layout files)."""
    inv_block = {v: k for k, v in BLOCK_KEY_MAP.items()}
    inv_global = {v: k for k, v in GLOBAL_KEY_MAP.items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        m = _HF_BLOCK.match(key)
        if m and m.group(2) in inv_block:
            out[REFERENCE_BLOCK_PREFIX.format(m.group(1)) + inv_block[m.group(2)]] = value
        elif key in inv_global:
            out[inv_global[key]] = value
        elif key != "encoder.embed_tokens.weight":
            raise T5KeyError(f"unknown key for the HF umT5 encoder layout: {key}")
    return out


def dequantize_scaled_fp8(sd: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Undo ComfyUI's "scaled fp8" packing: weight = fp8 weight * `<layer>.scale_weight`."""
    out = {k: v for k, v in sd.items() if not k.endswith(".scale_weight")}
    for key, scale in sd.items():
        if not key.endswith(".scale_weight"):
            continue
        wkey = key[: -len("scale_weight")] + "weight"
        if wkey not in out:
            raise T5KeyError(f"{key} has no matching {wkey}")
        w = out[wkey].to(torch.float32)
        s = scale.to(torch.float32)
        if s.ndim == 1 and s.numel() == w.shape[0] and w.ndim == 2:
            s = s[:, None]
        out[wkey] = (w * s).to(dtype)
    return out


def to_hf_umt5_encoder(sd: Mapping[str, torch.Tensor], dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Any known umT5 encoder layout -> UMT5EncoderModel state dict (both embedding aliases present).

    dtype: cast floating weights (fp8 weights are always dequantised first).
    """
    sd = strip_prefix(sd)
    dropped = [k for k in sd if _IGNORED.search(k)]
    if any(k.endswith(".scale_weight") for k in sd):
        sd = dequantize_scaled_fp8(sd, dtype or torch.float32)
    sd = {k: v for k, v in sd.items() if not _IGNORED.search(k)}
    if dropped:
        log.info("umT5: ignoring %d non-encoder keys (e.g. %s)", len(dropped), dropped[0])
    if detect_layout(sd) == REFERENCE:
        sd = reference_to_hf(sd)
    else:
        sd = dict(sd)
        embed = next((sd[k] for k in HF_EMBED_ALIASES if k in sd), None)
        if embed is None:
            raise T5KeyError("HF-layout umT5 state dict has neither shared.weight nor encoder.embed_tokens.weight")
        for k in HF_EMBED_ALIASES:
            sd[k] = embed
    if dtype is not None:
        sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    return sd


def infer_umt5_config(sd: Mapping[str, torch.Tensor], relative_attention_max_distance: int = 128) -> UMT5Config:
    """Build the UMT5Config that fits an HF-named encoder state dict (sizes read off the weights).

    umt5-xxl: vocab 256384, d_model 4096, 64 heads x 64, d_ff 10240, 24 layers, 32 buckets.
    """
    need = ["shared.weight", "encoder.block.0.layer.0.SelfAttention.q.weight",
            "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            "encoder.block.0.layer.1.DenseReluDense.wi_0.weight"]
    missing = [k for k in need if k not in sd]
    if missing:
        raise T5KeyError(f"umT5 encoder state dict lacks {missing}")
    vocab, d_model = sd["shared.weight"].shape
    inner = sd[need[1]].shape[0]
    buckets, heads = sd[need[2]].shape
    d_ff = sd[need[3]].shape[0]
    layers = 1 + max(int(m.group(1)) for k in sd if (m := _HF_BLOCK.match(k)))
    return UMT5Config(
        vocab_size=int(vocab), d_model=int(d_model), d_kv=int(inner // heads), d_ff=int(d_ff),
        num_layers=int(layers), num_heads=int(heads), relative_attention_num_buckets=int(buckets),
        relative_attention_max_distance=relative_attention_max_distance, feed_forward_proj="gated-gelu",
        dropout_rate=0.0, layer_norm_epsilon=1e-6, is_encoder_decoder=False, use_cache=False)
