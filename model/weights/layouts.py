"""Checkpoint layouts: which prefix and naming convention a file uses, and pure key conversions.

Every layout is mapped onto the *reference* names (the InfiniteTalk/Wan `WanModel.state_dict()` names,
e.g. `blocks.0.self_attn.q.weight`, `audio_proj.proj1.weight`, `head.modulation`; VAE `encoder.*`, CLIP
`visual.*`), which are also the names of our modules. Facts, from public code:

- Wan2.1-I2V-14B-480P (Wan-AI): 7 shards `diffusion_pytorch_model-0000N-of-00007.safetensors` + index json
  with `weight_map`; reference names, no prefix (InfiniteTalk wan/multitalk.py loads them with
  `load_state_dict` after a plain `update`).
- InfiniteTalk `single/infinitetalk.safetensors`, `multi/infinitetalk.safetensors`: the audio adapter only
  (330 keys for 40 blocks: 10 `audio_proj.*` + 8 per block `norm_x.*`, `audio_cross_attn.{q_linear,kv_linear,
  proj}.*`), merged over the base by `dict.update` (so a file that holds the whole merged model also works).
  ComfyUI's model-patch loader reads the same names (comfy_extras/nodes_model_patch.py).
- ComfyUI single files (e.g. wan2.1_i2v_480p_14B_fp16.safetensors): reference names under
  `model.diffusion_model.` (comfy/model_detection.py detects Wan by `head.modulation`); Kijai's
  WanVideoWrapper also strips `model.` and renames the adapter's `audio_proj.` to `multitalk_audio_proj.`.
- diffusers `WanTransformer3DModel`: `condition_embedder.*`, `attn1/attn2.to_q...`, `scale_shift_table`,
  `ffn.net.0.proj`, with the block norms 2 and 3 swapped (diffusers' convert_wan_to_diffusers rename table).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from .errors import WeightLoadError

V = TypeVar("V")

# Prefixes that wrap the model's own names in the files people have (longest first wins on ties).
KNOWN_PREFIXES: tuple[str, ...] = (
    "model.diffusion_model.",
    "diffusion_model.",
    "model.model.",
    "model.",
    "transformer.",
    "module.",
    "_orig_mod.",
    "video_model.",
)

# Aliases some tools write for the reference names (exact prefix replacements).
_ALIASES: tuple[tuple[str, str], ...] = (("multitalk_audio_proj.", "audio_proj."),)

# diffusers WanTransformer3DModel -> reference WanModel (regex, replacement), first match wins.
DIFFUSERS_TO_WAN: tuple[tuple[str, str], ...] = (
    (r"^condition_embedder\.time_embedder\.linear_1\.", "time_embedding.0."),
    (r"^condition_embedder\.time_embedder\.linear_2\.", "time_embedding.2."),
    (r"^condition_embedder\.text_embedder\.linear_1\.", "text_embedding.0."),
    (r"^condition_embedder\.text_embedder\.linear_2\.", "text_embedding.2."),
    (r"^condition_embedder\.time_proj\.", "time_projection.1."),
    (r"^condition_embedder\.image_embedder\.norm1\.", "img_emb.proj.0."),
    (r"^condition_embedder\.image_embedder\.ff\.net\.0\.proj\.", "img_emb.proj.1."),
    (r"^condition_embedder\.image_embedder\.ff\.net\.2\.", "img_emb.proj.3."),
    (r"^condition_embedder\.image_embedder\.norm2\.", "img_emb.proj.4."),
    (r"^proj_out\.", "head.head."),
    (r"^scale_shift_table$", "head.modulation"),
    (r"^blocks\.(\d+)\.scale_shift_table$", r"blocks.\1.modulation"),
    (r"^blocks\.(\d+)\.attn1\.to_q\.", r"blocks.\1.self_attn.q."),
    (r"^blocks\.(\d+)\.attn1\.to_k\.", r"blocks.\1.self_attn.k."),
    (r"^blocks\.(\d+)\.attn1\.to_v\.", r"blocks.\1.self_attn.v."),
    (r"^blocks\.(\d+)\.attn1\.to_out\.0\.", r"blocks.\1.self_attn.o."),
    (r"^blocks\.(\d+)\.attn1\.norm_q\.", r"blocks.\1.self_attn.norm_q."),
    (r"^blocks\.(\d+)\.attn1\.norm_k\.", r"blocks.\1.self_attn.norm_k."),
    (r"^blocks\.(\d+)\.attn2\.to_q\.", r"blocks.\1.cross_attn.q."),
    (r"^blocks\.(\d+)\.attn2\.to_k\.", r"blocks.\1.cross_attn.k."),
    (r"^blocks\.(\d+)\.attn2\.to_v\.", r"blocks.\1.cross_attn.v."),
    (r"^blocks\.(\d+)\.attn2\.to_out\.0\.", r"blocks.\1.cross_attn.o."),
    (r"^blocks\.(\d+)\.attn2\.add_k_proj\.", r"blocks.\1.cross_attn.k_img."),
    (r"^blocks\.(\d+)\.attn2\.add_v_proj\.", r"blocks.\1.cross_attn.v_img."),
    (r"^blocks\.(\d+)\.attn2\.norm_added_k\.", r"blocks.\1.cross_attn.norm_k_img."),
    (r"^blocks\.(\d+)\.attn2\.norm_q\.", r"blocks.\1.cross_attn.norm_q."),
    (r"^blocks\.(\d+)\.attn2\.norm_k\.", r"blocks.\1.cross_attn.norm_k."),
    (r"^blocks\.(\d+)\.norm2\.", r"blocks.\1.norm3."),  # diffusers norm2 = the affine cross-attn norm
    (r"^blocks\.(\d+)\.ffn\.net\.0\.proj\.", r"blocks.\1.ffn.0."),
    (r"^blocks\.(\d+)\.ffn\.net\.2\.", r"blocks.\1.ffn.2."),
)
_DIFFUSERS_RULES = tuple((re.compile(p), r) for p, r in DIFFUSERS_TO_WAN)
_DIFFUSERS_MARKERS = ("condition_embedder.", ".attn1.", ".attn2.", "scale_shift_table", "proj_out.", ".ffn.net.")


# ------------------------------------------------------------------------------------------------
# Pure conversions over state dicts (values are passed through untouched: tensors, TensorInfo, ...).

def strip_prefix(state: Mapping[str, V], prefix: str) -> dict[str, V]:
    """Drop `prefix` from every key that has it; other keys are kept as they are."""
    if not prefix:
        return dict(state)
    n = len(prefix)
    return {(k[n:] if k.startswith(prefix) else k): v for k, v in state.items()}


def diffusers_key_to_wan(key: str) -> str:
    """One diffusers WanTransformer3DModel name -> the reference name (unknown names unchanged)."""
    for pat, repl in _DIFFUSERS_RULES:
        new, n = pat.subn(repl, key, count=1)
        if n:
            return new
    return key


def convert_diffusers_to_wan(state: Mapping[str, V]) -> dict[str, V]:
    """A diffusers-format Wan transformer state dict with reference names."""
    return {diffusers_key_to_wan(k): v for k, v in state.items()}


def apply_aliases(key: str) -> str:
    for old, new in _ALIASES:
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def convert_comfyui_to_wan(state: Mapping[str, V]) -> dict[str, V]:
    """A ComfyUI single-file diffusion model (`model.diffusion_model.` names) with reference names."""
    prefix = "model.diffusion_model." if any(k.startswith("model.diffusion_model.") for k in state) else "diffusion_model."
    return {apply_aliases(k): v for k, v in strip_prefix(state, prefix).items()}


# ------------------------------------------------------------------------------------------------
# Detection

@dataclass(frozen=True)
class Layout:
    """How one file names its tensors, relative to the reference names."""

    prefix: str  # stripped from keys ("" if none)
    naming: str  # "reference" | "diffusers"
    content: tuple[str, ...]  # e.g. ("wan-base", "infinitetalk-adapter"), ("vae",), ("clip",)

    def to_reference(self, key: str) -> str:
        """Source key -> reference key (the key as the module names it)."""
        if self.prefix and key.startswith(self.prefix):
            key = key[len(self.prefix) :]
        if self.naming == "diffusers":
            key = diffusers_key_to_wan(key)
        return apply_aliases(key)

    def describe(self) -> str:
        parts = ["+".join(self.content) or "unknown content", f"{self.naming} names"]
        parts.append(f"prefix {self.prefix!r}" if self.prefix else "no prefix")
        return ", ".join(parts)


def _candidate_prefixes(keys: list[str], unknown_wrapper: bool) -> list[str]:
    cands = [""] + [p for p in KNOWN_PREFIXES if any(k.startswith(p) for k in keys)]
    firsts = sorted({k.split(".", 1)[0] + "." for k in keys if "." in k})
    if unknown_wrapper and len(firsts) <= 16:  # an unknown wrapper, e.g. "dit.", or "visual." of a full CLIP
        cands.extend(firsts)
    return list(dict.fromkeys(cands))


def classify_content(keys: Iterable[str]) -> tuple[str, ...]:
    """Which model parts a set of reference-named keys contains."""
    keys = list(keys)
    found = []
    if any(k.startswith(("head.head.", "head.modulation", "time_embedding.")) or
           (k.startswith("blocks.") and ".self_attn." in k) for k in keys):
        found.append("wan-base")
    if any(k.startswith("audio_proj.") or ".audio_cross_attn." in k for k in keys):
        found.append("infinitetalk-adapter")
    if any(k.startswith(("encoder.", "decoder.")) for k in keys) and any(k.startswith("conv1.") for k in keys):
        found.append("vae")
    if any(k.startswith("visual.") for k in keys):
        found.append("clip")
    return tuple(found)


def detect_layout(keys: Iterable[str], target_keys: Iterable[str] | None = None, *, file: str = "") -> Layout:
    """Pick the prefix and naming that make the most of `keys` land on `target_keys`.

    Without targets, the most common known prefix and the naming whose marker names appear are chosen.
    With targets, a file none of whose keys can be mapped is an error that shows sample keys.
    """
    keys = list(keys)
    targets = set(target_keys) if target_keys is not None else None
    best: tuple[int, int, Layout] | None = None
    for prefix in _candidate_prefixes(keys, unknown_wrapper=targets is not None):
        for naming in ("reference", "diffusers"):
            lay = Layout(prefix, naming, ())
            mapped = [lay.to_reference(k) for k in keys]
            if targets is not None:
                score = sum(m in targets for m in mapped)
            else:
                score = sum(k.startswith(prefix) for k in keys) if prefix else 0
                if naming == "diffusers":  # only when its marker names are there, and then it wins
                    score = score + 1 if any(m in k for k in keys for m in _DIFFUSERS_MARKERS) else -1
            # ties: with targets the smaller change wins (no prefix, reference names); without, the longest
            # known prefix ("model.diffusion_model." over "model.")
            length = -len(prefix) if targets is not None else len(prefix)
            rank = (score, length * 2 + (naming == "reference"))
            if best is None or rank > best[:2]:
                best = (*rank, lay)
    assert best is not None
    score, _, lay = best
    if targets is not None and score == 0 and keys:
        sample = ", ".join(keys[:6])
        want = ", ".join(sorted(targets)[:4])
        raise WeightLoadError(
            f"unknown checkpoint layout in {file or 'the given tensors'}: none of its {len(keys)} keys match "
            f"the model, with or without a known prefix ({', '.join(p for p in KNOWN_PREFIXES)}) or diffusers "
            f"naming. Sample keys: {sample}. The model expects keys like: {want}. Is this the right file?",
            files=[file] if file else [],
        )
    content = classify_content(lay.to_reference(k) for k in keys)
    return Layout(lay.prefix, lay.naming, content)
