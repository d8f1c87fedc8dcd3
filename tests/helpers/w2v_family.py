"""Random tiny wav2vec2 models of one family (seeds, sizes, inits), for bounds that must hold beyond one file.

A bound on the live features (streaming/features) tuned on `../shared/golden/wav2vec2_tiny` alone
may hold only for that file. The family here is what the golden generator makes (its README's
weight initialisation at any tiny size and seed, tests/helpers/golden_init.py: with the public
config and seed 1241 it reproduces the public file bit for bit) plus transformers' own random
initialisation. Sizes vary everything the extractor does not depend on by construction: widths,
depth, heads, the positional conv's taps and groups, the front end's norm. The conv stack's kernels and strides stay
the base model's (every wav2vec2 / HuBERT checkpoint has them): the extractor's token grid (one
token per 640 samples = conv frame 2f, exact for frame-aligned clips) assumes that stack.
Every model is written as an HF folder and read back through `model.audio.load_wav2vec2`.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import Wav2Vec2Config, Wav2Vec2Model

from model.audio import load_wav2vec2, whole_clip_embedding
from streaming.features import FeatureSettings, IncrementalFeatureExtractor

from .golden_init import golden_init_
from .w2v_models import PREPROCESSOR, frame_aligned, frame_cosines

BASE_KERNELS = (10, 3, 3, 3, 3, 2, 2)
BASE_STRIDES = (5, 2, 2, 2, 2, 2, 2)


@dataclass(frozen=True)
class W2VShape:
    """Sizes of one tiny wav2vec2 (the conv stack's kernels and strides are the base model's)."""

    hidden: int = 32
    layers: int = 2
    heads: int = 2
    ffn: int = 64
    conv_dim: int = 16
    pos_kernel: int = 16
    pos_groups: int = 4
    norm: str = "group"  # "group": base front end, post-norm encoder; "layer": large models', pre-norm

    def config(self) -> Wav2Vec2Config:
        return Wav2Vec2Config(
            hidden_size=self.hidden, num_hidden_layers=self.layers, num_attention_heads=self.heads,
            intermediate_size=self.ffn, conv_dim=(self.conv_dim,) * 7, conv_kernel=BASE_KERNELS,
            conv_stride=BASE_STRIDES, conv_bias=self.norm == "layer", feat_extract_norm=self.norm,
            do_stable_layer_norm=self.norm == "layer", num_conv_pos_embeddings=self.pos_kernel,
            num_conv_pos_embedding_groups=self.pos_groups, layer_norm_eps=1e-5, vocab_size=8)

    @property
    def label(self) -> str:
        return (f"h{self.hidden}x{self.layers}L/{self.heads}h ffn{self.ffn} conv{self.conv_dim} "
                f"pos{self.pos_kernel}/{self.pos_groups} {self.norm}")


def random_shape(rng: random.Random) -> W2VShape:
    """A random tiny member: widths 16-64, 1-4 layers, any head count and pos-conv grouping that divide
    the width, pos conv 8 to 128 taps (the base model's), either front end."""
    hidden = rng.choice([16, 24, 32, 48, 64])
    return W2VShape(
        hidden=hidden, layers=rng.randint(1, 4), heads=rng.choice([d for d in (1, 2, 4, 8) if hidden % d == 0]),
        ffn=rng.choice([2, 4]) * hidden, conv_dim=rng.choice([8, 12, 16, 24, 32]),
        pos_kernel=rng.choice([8, 12, 16, 18, 20, 24, 32, 48, 64, 128]),
        pos_groups=rng.choice([g for g in (2, 4, 8, 16) if hidden % g == 0]), norm=rng.choice(["group", "layer"]))


def pos_reach(model: Wav2Vec2Model) -> int:
    """Tokens to the right that the positional conv reads (kernel K, padding K // 2, last output dropped
    when K is even): where a block's positional embedding starts to see zeros instead of the future."""
    return (model.config.num_conv_pos_embeddings - 1) // 2


@dataclass(frozen=True)
class Member:
    """One model of the family: sizes, seed and initialisation ("golden" or "hf")."""

    shape: W2VShape
    seed: int
    init: str = "golden"

    @property
    def label(self) -> str:
        return f"{self.init} s{self.seed} {self.shape.label}"


# The models tests/streaming/test_speech_features.py checks every bound on, beside the golden file:
# "group" is its transformers-init model (tests/helpers/w2v_models.tiny_config("group"), seed 0).
SUITE = {
    "group": Member(W2VShape(conv_dim=24), seed=0, init="hf"),
    "golden-init 48x3": Member(W2VShape(hidden=48, layers=3, heads=4, ffn=96, conv_dim=24), seed=14),
    "golden-init 16x1 layer": Member(W2VShape(hidden=16, layers=1, heads=1, ffn=32, conv_dim=8, pos_kernel=8,
                                              pos_groups=2, norm="layer"), seed=14),
    "golden-init pos32": Member(W2VShape(pos_kernel=32, pos_groups=8), seed=14),
}


def hf_init_(model: Wav2Vec2Model, seed: int) -> Wav2Vec2Model:
    """transformers' random initialisation (seeded), norm affines moved off 1/0 as tests/helpers/w2v_models does."""
    torch.manual_seed(seed)
    fresh = Wav2Vec2Model(model.config)
    with torch.no_grad():
        for name, p in fresh.named_parameters():
            if "layer_norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.load_state_dict(fresh.state_dict())
    return model


def build(member: Member, folder: Path) -> Wav2Vec2Model:
    """Random weights -> HF folder -> `load_wav2vec2` (the real loading path)."""
    model = Wav2Vec2Model(member.shape.config())
    {"golden": golden_init_, "hf": hf_init_}[member.init](model, member.seed)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    (folder / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR))
    return load_wav2vec2(folder)


def live_frames(model: Wav2Vec2Model, x: np.ndarray, settings: FeatureSettings, piece: int = 1600) -> torch.Tensor:
    """Push x in pieces of `piece` samples, then flush -> [S, layers, hidden]."""
    ex = IncrementalFeatureExtractor(model, settings)
    out = [ex.push(x[i:i + piece]) for i in range(0, x.shape[0], piece)]
    return torch.cat([*out, ex.flush()])


def live_cosines(model: Wav2Vec2Model, clips: list[np.ndarray], settings: FeatureSettings,
                 seconds: float = 6.0) -> list[torch.Tensor]:
    """Per clip: per-frame cosine of live vs whole-clip features (first `seconds`, whole video frames)."""
    out = []
    for x in clips:
        x = frame_aligned(x, seconds)
        out.append(frame_cosines(live_frames(model, x, settings), whole_clip_embedding(model, x)))
    return out


def mean_p5(cos: list[torch.Tensor]) -> tuple[float, float]:
    """The two statistics the closeness bounds test: mean and 5th percentile of the pooled cosines."""
    c = torch.cat(cos)
    return float(c.mean()), float(c.quantile(0.05))
