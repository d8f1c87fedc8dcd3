"""A tiny random SoulX-FlashHead Pro or Lite written in the release layout (`release.py`).

Tests and `--preset flashhead-pro` / `flashhead-lite` demos on random weights load it through the same detection,
discovery and loaders as the real release; only the sizes and the weights differ. Its video is noise.
The DiT file carries the reference's unused `text_embedding.*` and `audio_emb.*` tensors too, as the
real checkpoint does, so the loader's skipping of them is exercised. Lite's VAE_LTX/ is a diffusers folder
in the release's naming (config.json + diffusion_pytorch_model.safetensors), base width 4.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from model.dit.flashhead import FlashHeadDiT
from model.infinitetalk.tiny import TINY_WAV2VEC2, write_tiny_wan_vae, write_tiny_wav2vec2
from model.vae.ltx_config import LtxVAEConfig
from model.vae.ltx_loading import WEIGHTS_FILE, port_to_diffusers
from model.vae.ltx_vae import LtxVAE

from .config import FlashHeadConfig
from .release import KINDS, LITE, MODEL_DIRS, PRO, VAE_DIRS, WAN_VAE_NAMES, WAV2VEC_DIR

log = logging.getLogger(__name__)

TINY_WAV2VEC2_64 = dict(TINY_WAV2VEC2, hidden_size=64, num_attention_heads=1, intermediate_size=64)
"""The tiny wav2vec2 with one 64-wide head, the width every released wav2vec2 uses (so a single-file copy
of it loads with its architecture read from the weights)."""

TINY_CONFIG = {
    "_class_name": "WanModelAudioProject", "_diffusers_version": "0.33.1",
    "_note": "tiny random SoulX-FlashHead for tests; its video is noise",
    "dim": 32, "in_dim": 32, "ffn_dim": 64, "out_dim": 16, "text_dim": 16, "freq_dim": 32, "eps": 1e-6,
    "vae_stride": [4, 8, 8], "patch_size": [1, 2, 2], "num_heads": 2, "num_layers": 2, "has_image_input": False,
    "audio": {"blocks": TINY_WAV2VEC2_64["num_hidden_layers"], "channels": TINY_WAV2VEC2_64["hidden_size"],
              "intermediate_dim": 16, "context_tokens": 4},
}
TINY_LITE_CONFIG = {**TINY_CONFIG, "vae_stride": [8, 32, 32], "patch_size": [1, 1, 1]}
TINY_LTX = LtxVAEConfig(latent_channels=16, block_out_channels=(4, 8, 16, 16), layers_per_block=(1, 1, 1, 1, 1))
_UNUSED_AUDIO_EMB_IN = 768  # the reference's `audio_emb = MLP(768, dim)`, never called


def _unused_reference_tensors(dim: int, text_dim: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """text_embedding.* and audio_emb.* as the reference's state dict has them (random values)."""
    shapes = {
        "text_embedding.0.weight": (dim, text_dim), "text_embedding.0.bias": (dim,),
        "text_embedding.2.weight": (dim, dim), "text_embedding.2.bias": (dim,),
        "audio_emb.proj.0.weight": (_UNUSED_AUDIO_EMB_IN,), "audio_emb.proj.0.bias": (_UNUSED_AUDIO_EMB_IN,),
        "audio_emb.proj.1.weight": (_UNUSED_AUDIO_EMB_IN, _UNUSED_AUDIO_EMB_IN),
        "audio_emb.proj.1.bias": (_UNUSED_AUDIO_EMB_IN,),
        "audio_emb.proj.3.weight": (dim, _UNUSED_AUDIO_EMB_IN), "audio_emb.proj.3.bias": (dim,),
        "audio_emb.proj.4.weight": (dim,), "audio_emb.proj.4.bias": (dim,),
    }
    return {k: torch.randn(s, generator=g) * 0.02 for k, s in shapes.items()}


@torch.no_grad()
def write_tiny_ltx_vae(folder: Path, cfg: LtxVAEConfig = TINY_LTX, seed: int = 0) -> None:
    """A random LTX-Video VAE of `cfg`'s sizes as a diffusers folder (the release's VAE_LTX/ naming)."""
    g = torch.Generator().manual_seed(seed)
    vae = LtxVAE(cfg)
    for name, p in vae.named_parameters():
        if name.endswith("bias"):
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
        elif p.dim() == 1:  # layer norm scales
            p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
    vae.latents_mean.copy_(0.1 * torch.randn(cfg.latent_channels, generator=g))
    vae.latents_std.copy_(0.5 + torch.rand(cfg.latent_channels, generator=g))
    folder.mkdir(parents=True, exist_ok=True)
    state = port_to_diffusers({k: v.contiguous() for k, v in vae.state_dict().items()}, cfg)
    save_file(state, folder / WEIGHTS_FILE)
    (folder / "config.json").write_text(json.dumps(cfg.to_diffusers(), indent=1))


def write_tiny_flashhead(root: str | Path, seed: int = 0, kind: str = PRO) -> Path:
    """Write a tiny Pro (DiT, Wan VAE, wav2vec2) or Lite (DiT, LTX VAE, wav2vec2) model under `root` in the
    release layout; returns `root`."""
    if kind not in KINDS:
        raise ValueError(f"unknown FlashHead kind {kind!r}")
    root = Path(root)
    model_dir, vae_dir = root / MODEL_DIRS[kind], root / VAE_DIRS[kind]
    model_dir.mkdir(parents=True, exist_ok=True)
    vae_dir.mkdir(parents=True, exist_ok=True)
    config = TINY_LITE_CONFIG if kind == LITE else TINY_CONFIG
    cfg = FlashHeadConfig.from_kwargs(config)
    dit: nn.Module = FlashHeadDiT(cfg.dit).init_random_weights_(seed)
    sd = {k: v.contiguous() for k, v in dit.state_dict().items()}
    sd.update(_unused_reference_tensors(cfg.dit.dim, cfg.dit.text_dim, torch.Generator().manual_seed(seed + 5)))
    save_file(sd, model_dir / "diffusion_pytorch_model.safetensors")
    (model_dir / "config.json").write_text(json.dumps(config, indent=1))
    if kind == LITE:
        write_tiny_ltx_vae(vae_dir, seed=seed + 1)
    else:
        write_tiny_wan_vae(vae_dir / WAN_VAE_NAMES[0], seed + 1)
    write_tiny_wav2vec2(root / WAV2VEC_DIR, TINY_WAV2VEC2_64)
    log.info("wrote a tiny random SoulX-FlashHead %s to %s", "Lite" if kind == LITE else "Pro", root)
    return root
