"""CLIP vision checkpoints in the Hugging Face `transformers` layout, renamed to the reference's names.

ComfyUI ships the ViT-H/14 tower that Wan and InfiniteTalk use as `clip_vision_h.safetensors` in the
`transformers` `CLIPVisionModelWithProjection` layout (`vision_model.encoder.layers.N.self_attn.q_proj`, ...),
while the reference release names it like Wan's own module (`visual.transformer.N.attn.to_qkv`, ...).
Both hold the same numbers: this maps one onto the other so ComfyUI users can point the server at the
files they already have. The mapping is checked against `transformers`' own CLIP model in the tests.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

HF_PREFIX = "vision_model."
# What a transformers CLIP file holds that InfiniteTalk never runs: the projection head, the final
# norm, the text tower (full CLIP files) and the position-id buffer older transformers saved.
_UNUSED = re.compile(
    r"^(visual_projection\..*|text_projection\..*|logit_scale|text_model\..*|"
    r"vision_model\.post_layernorm\..*|vision_model\.embeddings\.position_ids)$"
)
_LAYER = re.compile(r"^vision_model\.encoder\.layers\.(\d+)\.(.+)$")
_LAYER_PARTS = {
    "layer_norm1": "norm1",
    "layer_norm2": "norm2",
    "self_attn.out_proj": "attn.proj",
    "mlp.fc1": "mlp.0",
    "mlp.fc2": "mlp.2",
}
_EMBEDDINGS = {
    "vision_model.embeddings.patch_embedding.weight": "visual.patch_embedding.weight",
    "vision_model.embeddings.patch_embedding.bias": "visual.patch_embedding.bias",
    "vision_model.pre_layrnorm.weight": "visual.pre_norm.weight",  # (sic: transformers' spelling)
    "vision_model.pre_layrnorm.bias": "visual.pre_norm.bias",
}


def is_transformers_clip(keys: Iterable[str]) -> bool:
    """True when the keys look like a `transformers` CLIP vision model (ComfyUI's clip_vision files)."""
    return any(k.startswith(HF_PREFIX + "encoder.layers.") for k in keys)


def transformers_clip_to_reference(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename (and where needed reshape) a `transformers` CLIP vision state dict to the reference layout.

    q/k/v projections are stacked into one `to_qkv` ([3 * dim, dim], q first, as the reference's fused
    projection is laid out); the class token [dim] and position table [tokens, dim] get the reference's
    leading batch axes. Keys InfiniteTalk does not use are dropped; anything unrecognised is kept under
    its own name so the loader's key check reports it instead of it vanishing silently.
    """
    out: dict[str, Tensor] = {}
    qkv: dict[int, dict[str, Tensor]] = {}
    for key, value in state.items():
        if _UNUSED.match(key):
            continue
        if key in _EMBEDDINGS:
            out[_EMBEDDINGS[key]] = value
        elif key == "vision_model.embeddings.class_embedding":
            out["visual.cls_embedding"] = value.reshape(1, 1, -1)
        elif key == "vision_model.embeddings.position_embedding.weight":
            out["visual.pos_embedding"] = value.unsqueeze(0)
        elif m := _LAYER.match(key):
            index, rest = int(m.group(1)), m.group(2)
            proj = re.match(r"^self_attn\.([qkv])_proj\.(weight|bias)$", rest)
            if proj:
                qkv.setdefault(index, {})[f"{proj.group(1)}.{proj.group(2)}"] = value
                continue
            module, _, param = rest.rpartition(".")
            name = _LAYER_PARTS.get(module)
            out[f"visual.transformer.{index}.{name}.{param}" if name else key] = value
        else:
            out[key] = value
    for index, parts in qkv.items():
        for param in ("weight", "bias"):
            pieces = [parts.get(f"{p}.{param}") for p in "qkv"]
            if all(p is not None for p in pieces):
                out[f"visual.transformer.{index}.attn.to_qkv.{param}"] = torch.cat(pieces, dim=0)
            else:  # a partial projection: keep the pieces so the key check names them
                for p, piece in zip("qkv", pieces, strict=True):
                    if piece is not None:
                        out[f"{HF_PREFIX}encoder.layers.{index}.self_attn.{p}_proj.{param}"] = piece
    return out
