"""Which model a weights folder holds: the InfiniteTalk release layout or SoulX-FlashTalk-14B.

Both are the same DiT class (Wan2.1-I2V-14B with InfiniteTalk's audio adapter); they differ in how the
files are laid out and in how they must be sampled, so the server detects the kind at start-up and
picks the matching preset.

InfiniteTalk (MeiGen-AI release):
    WEIGHTS/Wan2.1-I2V-14B-480P/       plain Wan base (config.json without audio keys, 7 shards + index),
                                       VAE, CLIP, umT5
    WEIGHTS/InfiniteTalk/single/infinitetalk.safetensors    the audio adapter, merged at load
    WEIGHTS/chinese-wav2vec2-base/

SoulX-FlashTalk-14B (Soul-AILab release; its code loads the folder with `WanModel.from_pretrained`,
so the DiT files use the reference WanModel names and the adapter is already merged in):
    SoulX-FlashTalk-14B/config.json    WanModel kwargs, audio ones included (audio_window, vae_scale, ...)
    SoulX-FlashTalk-14B/diffusion_pytorch_model*.safetensors (+ .index.json when sharded)
    SoulX-FlashTalk-14B/Wan2.1_VAE.pth, models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth,
        models_t5_umt5-xxl-enc-bf16.pth + google/umt5-xxl/     (same files as Wan's)
    chinese-wav2vec2-base/             next to it (its README downloads both into models/)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from model.weights import read_shapes

log = logging.getLogger(__name__)

INFINITETALK = "infinitetalk"
FLASHTALK = "flashtalk"
KINDS = (INFINITETALK, FLASHTALK)

BASE_DIR = "Wan2.1-I2V-14B-480P"
ADAPTER_PATHS = ("InfiniteTalk/single/infinitetalk.safetensors", "InfiniteTalk/multi/infinitetalk.safetensors")
FLASHTALK_DIR = "SoulX-FlashTalk-14B"
FLASHTALK_PROMPT = "A person is talking. Only the foreground characters are moving, the background remains static."
"""The prompt FlashTalk's scripts always pass (it samples without guidance, so no negative prompt is used)."""

KIND_LABELS = {INFINITETALK: "InfiniteTalk", FLASHTALK: "SoulX-FlashTalk (distilled InfiniteTalk)"}


class MissingWeightsError(FileNotFoundError):
    """Some model files are missing; the message lists each one with the names looked for."""


class UnknownWeightsError(MissingWeightsError):
    """The folder is neither layout; the message describes both."""


def _dit_files(folder: Path) -> list[Path]:
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    return [index] if index.exists() else sorted(folder.glob("diffusion_pytorch_model*.safetensors"))


def has_merged_audio(folder: Path) -> bool:
    """True when the DiT files in `folder` (diffusion_pytorch_model*) hold audio adapter tensors.

    Decided by tensor names (index weight_map or safetensors headers), not by config.json: configs of
    small test models name the audio sizes even when the adapter is a separate file.
    """
    files = _dit_files(folder)
    if not files:
        return False
    if files[0].name.endswith(".index.json"):
        keys = json.loads(files[0].read_text()).get("weight_map", {})
    else:
        keys = read_shapes(files)
    return any(k.startswith("audio_proj.") or ".audio_cross_attn." in k for k in keys)


def detect_weights_kind(root: str | Path) -> str:
    """"infinitetalk" or "flashtalk" for a weights folder; UnknownWeightsError for anything else.

    Order: a SoulX-FlashTalk-14B folder (by name); the InfiniteTalk release (base folder or adapter
    file present); otherwise a DiT folder whose audio adapter is merged in is taken as FlashTalk
    (a merged InfiniteTalk looks the same: choose its preset with --preset infinitetalk) and one
    without as an InfiniteTalk base.
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingWeightsError(f"weights folder {root} does not exist")
    if (root / FLASHTALK_DIR).is_dir() or root.name.lower().startswith("soulx-flashtalk"):
        return FLASHTALK
    if (root / BASE_DIR).is_dir() or any((root / p).exists() for p in ADAPTER_PATHS):
        return INFINITETALK
    if (root / "config.json").exists() or _dit_files(root):
        if has_merged_audio(root):
            log.info("%s holds a DiT with the audio adapter merged in and no InfiniteTalk adapter file: "
                     "treating it as SoulX-FlashTalk", root)
            return FLASHTALK
        return INFINITETALK
    raise UnknownWeightsError(
        f"{root} holds no weights this server knows. Expected either\n"
        f"  - InfiniteTalk: {root / BASE_DIR}/ (Wan2.1-I2V-14B-480P: config.json, "
        f"diffusion_pytorch_model-0000N-of-0000M.safetensors + index, Wan2.1_VAE.pth, CLIP .pth) and "
        f"{root / ADAPTER_PATHS[0]}, plus {root / 'chinese-wav2vec2-base'}/; or\n"
        f"  - SoulX-FlashTalk-14B: {root / FLASHTALK_DIR}/ (config.json, diffusion_pytorch_model*.safetensors "
        f"with the audio adapter merged, Wan2.1_VAE.pth, CLIP .pth, umT5 .pth) and "
        f"{root / 'chinese-wav2vec2-base'}/ next to it."
    )
