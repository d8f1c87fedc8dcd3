"""wav2vec2 from one weights file with no config (how ComfyUI users keep it, e.g.
`wav2vec2-chinese-base_fp16.safetensors` beside `clip_vision_h.safetensors`).

The architecture is read from the tensors: hidden width (feature projection), layer count, FFN width,
the CNN's channels and kernels, whether its norms are per layer (LayerNorm) or only on the first layer
(GroupNorm), conv biases, and the positional convolution's kernel and groups (from its weight-norm
tensors, stored either as `weight_g`/`weight_v` or as torch parametrizations). Two things are not in
the weights and follow the convention every released wav2vec2 keeps: 64-wide attention heads, and the
stable (pre-norm) layer order exactly when the CNN uses LayerNorm (large "lv60" models) and post-norm
with GroupNorm (base models). CNN strides are wav2vec2's fixed ones, matched to the kernels read.
The result is loaded strictly into transformers' own `Wav2Vec2Model` built from that config.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor
from transformers import Wav2Vec2Config, Wav2Vec2Model

from model.vae.loading import load_state_dict_file

log = logging.getLogger(__name__)

HEAD_DIM = 64
"""Width of one attention head in every released wav2vec2 (base 768 / 12, large 1024 / 16)."""
_STRIDE_OF_KERNEL = {10: 5, 3: 2, 2: 2}  # wav2vec2's CNN: kernels (10, 3, 3, 3, 3, 2, 2), strides (5, 2, ...)
_PREFIXES = ("wav2vec2.", "model.", "audio_encoder.")
_POS = "encoder.pos_conv_embed.conv."
_WEIGHT_NORM = {  # old name -> torch.nn.utils.parametrizations name
    _POS + "weight_g": _POS + "parametrizations.weight.original0",
    _POS + "weight_v": _POS + "parametrizations.weight.original1",
}


class Wav2Vec2FileError(ValueError):
    """The file is not a wav2vec2 state dict this loader can read; the message says what is off."""


def _strip(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop a wrapper prefix ("wav2vec2." in ComfyUI files) and CTC heads; new weight-norm names."""
    out = {}
    for key, value in sd.items():
        for p in _PREFIXES:
            if key.startswith(p) and (key[len(p):].startswith(("feature_", "encoder.", "masked_spec"))):
                key = key[len(p):]
                break
        if key.startswith(("lm_head.", "project_", "quantizer.", "dropout")):
            continue
        out[_WEIGHT_NORM.get(key, key)] = value
    return out


def infer_wav2vec2_config(sd: Mapping[str, Tensor]) -> Wav2Vec2Config:
    """The `Wav2Vec2Config` a (prefix-stripped) state dict was made with (see the module docstring)."""
    need = ("feature_projection.projection.weight", _POS + "parametrizations.weight.original1",
            "feature_extractor.conv_layers.0.conv.weight")
    absent = [k for k in need if k not in sd]
    if absent:
        raise Wav2Vec2FileError(f"not a wav2vec2 state dict: no {', '.join(absent)}")
    hidden, conv_last = sd["feature_projection.projection.weight"].shape
    layers = sorted({int(m.group(1)) for k in sd if (m := re.match(r"encoder\.layers\.(\d+)\.", k))})
    convs = sorted({int(m.group(1)) for k in sd if (m := re.match(r"feature_extractor\.conv_layers\.(\d+)\.conv", k))})
    if not layers or layers != list(range(len(layers))) or convs != list(range(len(convs))):
        raise Wav2Vec2FileError(f"wav2vec2 layers are not numbered 0..n-1 (encoder {layers}, CNN {convs})")
    conv_w = [sd[f"feature_extractor.conv_layers.{i}.conv.weight"] for i in convs]
    kernels = tuple(int(w.shape[2]) for w in conv_w)
    if any(k not in _STRIDE_OF_KERNEL for k in kernels):
        raise Wav2Vec2FileError(f"CNN kernels {kernels} are not wav2vec2's (10, 3, 3, 3, 3, 2, 2)")
    layer_norm_cnn = "feature_extractor.conv_layers.1.layer_norm.weight" in sd
    pos_v = sd[_POS + "parametrizations.weight.original1"]  # [hidden, hidden / groups, kernel]
    if hidden % HEAD_DIM:
        raise Wav2Vec2FileError(f"hidden width {hidden} is not a multiple of wav2vec2's {HEAD_DIM}-wide heads")
    return Wav2Vec2Config(
        hidden_size=int(hidden),
        num_hidden_layers=len(layers),
        num_attention_heads=int(hidden) // HEAD_DIM,
        intermediate_size=int(sd["encoder.layers.0.feed_forward.intermediate_dense.weight"].shape[0]),
        conv_dim=tuple(int(w.shape[0]) for w in conv_w),
        conv_kernel=kernels,
        conv_stride=tuple(_STRIDE_OF_KERNEL[k] for k in kernels),
        conv_bias="feature_extractor.conv_layers.0.conv.bias" in sd,
        feat_extract_norm="layer" if layer_norm_cnn else "group",
        do_stable_layer_norm=layer_norm_cnn,
        num_conv_pos_embeddings=int(pos_v.shape[2]),
        num_conv_pos_embedding_groups=int(hidden) // int(pos_v.shape[1]),
        vocab_size=32,
    )


def load_wav2vec2_file(path: str | Path, device: str | torch.device = "cpu",
                       dtype: torch.dtype = torch.float32) -> Wav2Vec2Model:
    """transformers `Wav2Vec2Model` from one .safetensors/.pth file, its config inferred from the weights;
    every tensor the model has must be in the file (masked_spec_embed, used only in pre-training, may not)."""
    sd = _strip(load_state_dict_file(path))
    cfg = infer_wav2vec2_config(sd)
    model = Wav2Vec2Model(cfg)
    own = model.state_dict()
    missing = sorted(set(own) - set(sd) - {"masked_spec_embed"})
    mismatched = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or mismatched:
        raise Wav2Vec2FileError(f"{path}: weights do not fit the inferred {cfg.num_hidden_layers} x {cfg.hidden_size} "
                                f"wav2vec2: missing {missing[:6]}, mismatched {mismatched[:6]}")
    extra = sorted(set(sd) - set(own))
    if extra:
        log.info("wav2vec2 %s: ignoring %d tensors the model does not use (e.g. %s)", path, len(extra), extra[0])
    model.load_state_dict({k: v.float() for k, v in sd.items() if k in own}, strict=False)
    log.info("wav2vec2 loaded from the single file %s: %d layers x %d (architecture read from the weights)",
             path, cfg.num_hidden_layers, cfg.hidden_size)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)
