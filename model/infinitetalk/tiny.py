"""A tiny random-weight InfiniteTalk written in the release's folder layout (or SoulX-FlashTalk's).

Used by tests and by `serve --preset tiny-random`: the files go through the same discovery and
loaders as real weights, so everything but the sizes and the weights is what production runs.
Its video is noise: the weights are random.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import Wav2Vec2Config, Wav2Vec2Model
from transformers.utils import logging as transformers_logging

from model.clip_vision import CLIPVisionConfig, CLIPVisionEncoder
from model.dit import DiTConfig, InfiniteTalkDiT
from model.text import save_prompt_embeddings
from model.timebase import SAMPLE_RATE
from model.vae import VAEConfig, WanVAE

from .bundle import (
    ADAPTER_PATHS,
    BASE_DIR,
    CLIP_CONFIG,
    CLIP_NAMES,
    PROMPT_FILE,
    VAE_CONFIG,
    VAE_NAMES,
    WAV2VEC_DIR,
)
from .kinds import FLASHTALK_DIR

log = logging.getLogger(__name__)

ADAPTER_PREFIXES = ("audio_proj.",)
ADAPTER_PARTS = (".norm_x.", ".audio_cross_attn.")

TINY_WAV2VEC2 = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
    conv_dim=(16,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
    conv_bias=False, feat_extract_norm="group", do_stable_layer_norm=False,
    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, vocab_size=8,
)
TINY_CLIP = CLIPVisionConfig(image_size=32, patch_size=2, dim=32, mlp_ratio=2.0, num_heads=2, num_layers=2)


def tiny_dit_config() -> DiTConfig:
    """DiTConfig.tiny() with audio and CLIP widths matching the tiny wav2vec2 and CLIP tower."""
    return dataclasses.replace(
        DiTConfig.tiny(), audio_layers=TINY_WAV2VEC2["num_hidden_layers"], audio_width=TINY_WAV2VEC2["hidden_size"],
        clip_dim=TINY_CLIP.dim, clip_tokens=TINY_CLIP.num_tokens,
    )


def _is_adapter(key: str) -> bool:
    return key.startswith(ADAPTER_PREFIXES) or any(p in key for p in ADAPTER_PARTS)


def _random_(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        fan_in = math.prod(p.shape[1:]) if p.dim() > 1 else 1
        if name.endswith(("gamma", "norm.weight")) or ("norm" in name and name.endswith("weight")):
            p.data = 1 + 0.1 * torch.randn(p.shape, generator=g)
        else:
            p.data = torch.randn(p.shape, generator=g) / math.sqrt(fan_in)


def _write_dit_shards(folder: Path, sd: dict[str, torch.Tensor], shards: int = 2) -> None:
    """diffusion_pytorch_model-0000N-of-0000M.safetensors + index json, as the releases shard them."""
    keys = sorted(sd)
    size = -(-len(keys) // shards)
    weight_map = {}
    for i in range(shards):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = keys[i * size : (i + 1) * size]
        save_file({k: sd[k] for k in part}, folder / name)
        weight_map.update({k: name for k in part})
    index = {"metadata": {"total_size": sum(sd[k].numel() * sd[k].element_size() for k in keys)},
             "weight_map": weight_map}
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index, indent=1))


def _dit_config_json(cfg: DiTConfig, **extra) -> str:
    config = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    config.update(model_type="i2v", **extra)
    return json.dumps(config, indent=1)


def write_tiny_wan_vae(path: Path, seed: int) -> None:
    """A random tiny Wan VAE at `path` (.safetensors, or a torch .pth) with its sizes in vae_config.json beside it."""
    vae_cfg = VAEConfig.tiny()
    vae = WanVAE(vae_cfg)
    _random_(vae, seed)
    sd = {k: v.contiguous() for k, v in vae.state_dict().items()}
    if path.suffix == ".pth":
        torch.save(sd, path)
    else:
        save_file(sd, path)
    vae_kwargs = {f.name: getattr(vae_cfg, f.name) for f in dataclasses.fields(vae_cfg)}
    (path.parent / VAE_CONFIG).write_text(json.dumps(vae_kwargs))


def write_tiny_wav2vec2(wav_dir: Path, sizes: dict | None = None) -> None:
    """A random tiny wav2vec2 (transformers folder with its preprocessor_config.json) in `wav_dir`;
    sizes: Wav2Vec2Config fields (default `TINY_WAV2VEC2`)."""
    wav = Wav2Vec2Model(Wav2Vec2Config(**(sizes or TINY_WAV2VEC2)))
    transformers_logging.disable_progress_bar()
    wav.save_pretrained(wav_dir, safe_serialization=True)
    (wav_dir / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": True, "feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1,
        "padding_side": "right", "padding_value": 0.0, "return_attention_mask": False, "sampling_rate": SAMPLE_RATE,
    }))


def _write_encoders(base: Path, wav_dir: Path, prompt_file: Path, text_dim: int, seed: int) -> None:
    """VAE and CLIP (with size sidecars) into `base`, wav2vec2 into `wav_dir`, random prompt embeddings."""
    write_tiny_wan_vae(base / VAE_NAMES[0], seed + 1)

    clip = CLIPVisionEncoder(TINY_CLIP)
    _random_(clip, seed + 2)
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, base / CLIP_NAMES[0])
    clip_kwargs = {f.name: getattr(TINY_CLIP, f.name) for f in dataclasses.fields(TINY_CLIP)}
    clip_kwargs["normalize_mean"], clip_kwargs["normalize_std"] = clip_kwargs.pop("mean"), clip_kwargs.pop("std")
    (base / CLIP_CONFIG).write_text(json.dumps(clip_kwargs))

    write_tiny_wav2vec2(wav_dir)

    g = torch.Generator().manual_seed(seed + 3)
    save_prompt_embeddings(prompt_file, torch.randn(8, text_dim, generator=g), torch.randn(10, text_dim, generator=g),
                           {"prompt_text": "tiny random", "negative_text": "tiny random", "encoder": "random"})


def write_tiny_weights(root: str | Path, seed: int = 0) -> Path:
    """Write a complete tiny model under `root` in the InfiniteTalk release layout; returns `root`."""
    root = Path(root)
    base = root / BASE_DIR
    base.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)

    cfg = tiny_dit_config()
    dit = InfiniteTalkDiT(cfg).init_random_weights_(seed)
    sd = {k: v.contiguous() for k, v in dit.state_dict().items()}
    _write_dit_shards(base, {k: v for k, v in sd.items() if not _is_adapter(k)})
    (base / "config.json").write_text(_dit_config_json(cfg, _note="tiny random InfiniteTalk for tests; its video is noise"))
    adapter = root / ADAPTER_PATHS[0]
    adapter.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: sd[k] for k in sd if _is_adapter(k)}, adapter)
    _write_encoders(base, root / WAV2VEC_DIR, root / PROMPT_FILE, cfg.text_dim, seed)
    log.info("wrote a tiny random InfiniteTalk to %s", root)
    return root


def write_tiny_flashtalk_weights(root: str | Path, seed: int = 0) -> Path:
    """Write a tiny model under `root` in SoulX-FlashTalk's layout; returns `root`.

    root/SoulX-FlashTalk-14B/ holds a diffusers-style DiT (config.json with the WanModel kwargs and
    diffusers metadata keys, sharded diffusion_pytorch_model files + index, reference tensor names,
    audio adapter merged in), the VAE, CLIP and prompt embeddings; root/chinese-wav2vec2-base/ sits next to it.
    """
    root = Path(root)
    base = root / FLASHTALK_DIR
    base.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cfg = tiny_dit_config()
    dit = InfiniteTalkDiT(cfg).init_random_weights_(seed)
    _write_dit_shards(base, {k: v.contiguous() for k, v in dit.state_dict().items()}, shards=3)
    (base / "config.json").write_text(_dit_config_json(
        cfg, _class_name="WanModel", _diffusers_version="0.33.1",
        _note="tiny random SoulX-FlashTalk for tests; its video is noise"))
    _write_encoders(base, root / WAV2VEC_DIR, base / PROMPT_FILE, cfg.text_dim, seed)
    log.info("wrote a tiny random SoulX-FlashTalk to %s", root)
    return root
