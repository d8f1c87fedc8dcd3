"""Infer the DiT's constructor arguments from tensor shapes, so a model can be built to fit its files.

Returns the reference `WanModel(**kwargs)` names (InfiniteTalk wan/modules/multitalk_model.py). What the
shapes cannot tell is filled with the real checkpoint's values: heads = dim / head_dim with head_dim 128 (the
Wan convention; ComfyUI's model_detection does the same), text_len 512, eps 1e-6, window_size (-1, -1).
The audio projector's input is hard-wired to 12 wav2vec2 layers x 768 channels in the reference, which is how
audio_window and vae_scale are recovered from proj1/proj1_vf widths.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from .errors import WeightLoadError
from .layouts import detect_layout

AUDIO_LAYERS, AUDIO_CHANNELS = 12, 768
_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def infer_dit_config(
    shapes: Mapping[str, Sequence[int]],
    *,
    head_dim: int = 128,
    text_len: int = 512,
    eps: float = 1e-6,
) -> dict:
    """Reference WanModel kwargs from `{key: shape}` (reference, ComfyUI or diffusers names).

    Raises WeightLoadError when the shapes are not those of a Wan DiT.
    """
    lay = detect_layout(shapes.keys())
    s = {lay.to_reference(k): tuple(int(d) for d in v) for k, v in shapes.items()}
    need = ("patch_embedding.weight", "head.head.weight", "blocks.0.ffn.0.weight", "text_embedding.0.weight",
            "time_embedding.0.weight")
    absent = [k for k in need if k not in s]
    if absent:
        raise WeightLoadError(
            f"cannot infer a DiT config: no {', '.join(absent)} among {len(s)} tensors (e.g. "
            f"{', '.join(list(s)[:4])}); these are not the weights of a Wan DiT",
            missing=absent,
        )
    pe = s["patch_embedding.weight"]  # [dim, in_dim, pt, ph, pw]
    dim, in_dim, patch = pe[0], pe[1], tuple(pe[2:])
    n_patch = 1
    for p in patch:
        n_patch *= p
    if dim % head_dim:
        raise WeightLoadError(f"dim {dim} is not a multiple of head_dim {head_dim}; pass the right head_dim")
    cfg: dict = {
        "model_type": "i2v" if "img_emb.proj.1.weight" in s else "t2v",
        "patch_size": list(patch),
        "text_len": text_len,
        "in_dim": in_dim,
        "dim": dim,
        "ffn_dim": s["blocks.0.ffn.0.weight"][0],
        "freq_dim": s["time_embedding.0.weight"][1],
        "text_dim": s["text_embedding.0.weight"][1],
        "out_dim": s["head.head.weight"][0] // n_patch,
        "num_heads": dim // head_dim,
        "num_layers": 1 + max(int(m.group(1)) for k in s if (m := _BLOCK.match(k))),
        "window_size": [-1, -1],
        "qk_norm": "blocks.0.self_attn.norm_q.weight" in s,
        "cross_attn_norm": "blocks.0.norm3.weight" in s,
        "eps": eps,
    }
    if "audio_proj.proj1.weight" in s:
        per_window = AUDIO_LAYERS * AUDIO_CHANNELS
        p1, p1vf, p3 = s["audio_proj.proj1.weight"], s["audio_proj.proj1_vf.weight"], s["audio_proj.proj3.weight"]
        kv = s["blocks.0.audio_cross_attn.kv_linear.weight"]  # [2*dim, output_dim]
        if p1[1] % per_window or p1vf[1] % per_window:
            raise WeightLoadError(
                f"audio_proj.proj1 input width {p1[1]} is not a multiple of {AUDIO_LAYERS}x{AUDIO_CHANNELS}: not an "
                "InfiniteTalk/MultiTalk (wav2vec2-base) audio adapter"
            )
        audio_window = p1[1] // per_window
        output_dim = kv[1]
        cfg.update(
            audio_window=audio_window,
            intermediate_dim=p1[0],
            output_dim=output_dim,
            context_tokens=p3[0] // output_dim,
            vae_scale=p1vf[1] // per_window - audio_window + 1,
            norm_input_visual="blocks.0.norm_x.weight" in s,
            norm_output_audio="audio_proj.norm.weight" in s,
        )
    return cfg
