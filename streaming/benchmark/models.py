"""What the bench runs on: the infinitetalk backend at a chosen shape with random weights, speech, an avatar.

`tiny` is the tiny random model written in the release layout and loaded through the real loaders
(as `serve --preset tiny-random` does). `14b` builds every network at its real size directly on the
device with random values (DiT on the meta device, then `to_empty` and a seeded fill), so speed and
memory are those of the real model without its 80 GB of files; its video is noise.
"""

from __future__ import annotations

import logging
import math
import os
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.clip_vision import CLIPVisionConfig, CLIPVisionEncoder
from model.dit import DiTConfig, InfiniteTalkDiT
from model.families.registry import build_model
from model.infinitetalk import InfiniteTalkBundle, InfiniteTalkPipeline, TextConditioning
from model.infinitetalk.assemble import InfiniteTalkModel, window_settings
from model.vae import VAEConfig, WanVAE

from ..backends.infinitetalk.build import backend_settings
from ..backends.infinitetalk.generator import InfiniteTalkGenerator
from ..backends.infinitetalk.options import InfiniteTalkOptions
from ..generator import SAMPLE_RATE, Avatar
from .options import SHAPES

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class RandomShape:
    """Configs of the four networks for a random-weight bundle."""

    dit: DiTConfig
    vae: VAEConfig
    clip: CLIPVisionConfig
    wav2vec2: dict
    text_tokens: tuple[int, int] = (24, 120)  # prompt, negative prompt lengths


def real_shape() -> RandomShape:
    """InfiniteTalk on Wan2.1-I2V-14B: DiT 40 x 5120, Wan VAE, CLIP ViT-H/14, wav2vec2-base."""
    return RandomShape(DiTConfig.infinitetalk_14b(), VAEConfig(), CLIPVisionConfig(),
                       dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                            feat_extract_norm="group", do_stable_layer_norm=False))


def _fill_(module: torch.nn.Module, seed: int) -> None:
    """Seeded random values on each parameter's own device: norms ~1, other weights ~N/sqrt(fan_in)."""
    g: dict[torch.device, torch.Generator] = {}
    with torch.no_grad():
        for name, p in module.named_parameters():
            gen = g.setdefault(p.device, torch.Generator(device=p.device).manual_seed(seed))
            r = torch.randn(p.shape, generator=gen, device=p.device, dtype=torch.float32)
            if "norm" in name and name.endswith("weight"):
                r = 1 + 0.1 * r
            elif name.endswith("bias"):
                r = 0.02 * r
            else:
                r = r / math.sqrt(math.prod(p.shape[1:]) if p.dim() > 1 else 1)
            p.copy_(r)


def _on_device(cls, cfg, device: torch.device, dtype: torch.dtype, seed: int) -> torch.nn.Module:
    with torch.device("meta"):
        module = cls(cfg)
    module = module.to(dtype=dtype).to_empty(device=device)
    _fill_(module, seed)
    return module.eval().requires_grad_(False)


def random_bundle(shape: RandomShape, device: str | torch.device, dtype: torch.dtype, seed: int = 0) -> InfiniteTalkBundle:
    """Every network at `shape` with random weights, built on `device` without touching the disk."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    device = torch.device(device)
    with torch.device("meta"):
        dit = InfiniteTalkDiT(shape.dit)
    dit = dit.to(dtype=dtype).to_empty(device=device).init_random_weights_(seed).eval().requires_grad_(False)
    vae = _on_device(WanVAE, shape.vae, device, torch.float32, seed + 1)
    clip_dtype = torch.float16 if device.type == "cuda" else torch.float32
    clip = _on_device(CLIPVisionEncoder, shape.clip, device, clip_dtype, seed + 2)
    torch.manual_seed(seed + 3)
    wav = Wav2Vec2Model(Wav2Vec2Config(**shape.wav2vec2)).to(device).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(seed + 4)
    text = TextConditioning(torch.randn(shape.text_tokens[0], shape.dit.text_dim, generator=g),
                            torch.randn(shape.text_tokens[1], shape.dit.text_dim, generator=g))
    pipe = InfiniteTalkPipeline(dit, vae, clip, text, device)
    desc = (f"RANDOM WEIGHTS (video is noise): DiT {shape.dit.num_layers}x{shape.dit.dim} ({dtype}) on {device}")
    return InfiniteTalkBundle(pipe, wav, None, desc)


def build_generator(shape: str, opts: InfiniteTalkOptions, max_batch: int) -> InfiniteTalkGenerator:
    """The backend at `shape` ("tiny" or "14b") with the window/step settings of `opts`."""
    m = opts.model
    if m.device and m.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {m.device}: CUDA is not available on this machine")
    if shape == "tiny":
        model = build_model(m)
        if not isinstance(model, InfiniteTalkModel):
            raise ValueError(f"the bench command measures InfiniteTalk-family presets, not {m.preset or 'these weights'}; "
                             "for SoulX-FlashHead give --preset flashhead-pro")
    elif shape == "14b":
        device = torch.device(m.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[
            m.dtype or ("bf16" if device.type == "cuda" else "fp32")]
        model = InfiniteTalkModel(random_bundle(real_shape(), device, dtype, m.seed), window_settings(m),
                                  m.size or (448, 448), m.preset or "infinitetalk")
    else:
        raise ValueError(f"unknown shape {shape!r}: choose one of {', '.join(SHAPES)}")
    return InfiniteTalkGenerator(model.bundle, backend_settings(opts, model, max_batch=max_batch))


def load_speech(seconds: float) -> np.ndarray:
    """`seconds` of real speech (tests' shared speech clips, looped) or, without them, speech-like noise."""
    roots = [os.environ.get("INFINITETALK_TEST_AUDIO"), Path(__file__).resolve().parents[3] / "shared" / "audio",
             "/work/shared/audio"]
    n = int(seconds * SAMPLE_RATE)
    for root in roots:
        p = Path(root or "") / "speech_en1.wav"
        if root and p.is_file():
            with wave.open(str(p)) as w:
                pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768.0
            return np.resize(pcm, n).astype(np.float32)
    rng = np.random.default_rng(0)
    t = np.arange(n) / SAMPLE_RATE
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)  # syllable-rate loudness
    return (0.2 * envelope * rng.standard_normal(n)).astype(np.float32)


def bench_avatar(size: tuple[int, int], seed: int = 0) -> Avatar:
    """A random still image at the generation size (so no resize cost is measured)."""
    h, w = size
    return Avatar(f"bench{seed}", np.random.default_rng(seed).integers(0, 256, (1, h, w, 3), np.uint8))
