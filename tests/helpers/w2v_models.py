"""Tiny random-weight wav2vec2 models for the live-feature tests, saved and loaded like real ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from transformers import Wav2Vec2Config, Wav2Vec2Model

from model.audio import load_wav2vec2

PREPROCESSOR = {"do_normalize": True, "sampling_rate": 16000, "feature_size": 1, "padding_value": 0.0,
                "return_attention_mask": False, "feature_extractor_type": "Wav2Vec2FeatureExtractor"}


def tiny_config(norm: str = "group", seed_dim: int = 24) -> Wav2Vec2Config:
    """The base model's conv stack (kernels 10,3,3,3,3,2,2 / strides 5,2,2,2,2,2,2) at a tiny width.

    norm "group": chinese-wav2vec2-base's front end (GroupNorm after conv0, post-norm encoder);
    norm "layer": the large models' (LayerNorm after every conv, pre-norm encoder).
    """
    return Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(seed_dim,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_bias=norm == "layer", feat_extract_norm=norm, do_stable_layer_norm=norm == "layer",
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, layer_norm_eps=1e-5)


def save_and_load(config: Wav2Vec2Config, folder: Path, seed: int = 0) -> Wav2Vec2Model:
    """Random weights -> HF folder (config.json, model.safetensors, preprocessor_config.json) -> loader."""
    torch.manual_seed(seed)
    model = Wav2Vec2Model(config)
    with torch.no_grad():  # GroupNorm/LayerNorm affine away from 1/0, so the tests see them
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(str(folder), safe_serialization=True)
    (folder / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR))
    assert (folder / "model.safetensors").is_file()
    return load_wav2vec2(folder)


def frame_aligned(x: np.ndarray, seconds: float | None = None) -> np.ndarray:
    """The first `seconds` of x, cut to whole 640-sample video frames (a live stream's natural length)."""
    if seconds is not None:
        x = x[: int(seconds * 16000)]
    return x[: x.shape[0] // 640 * 640]


def frame_cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-frame cosine similarity of [S, layers, hidden] embeddings, all layers as one vector -> [S]."""
    return torch.nn.functional.cosine_similarity(a.float().flatten(1), b.float().flatten(1), dim=-1)
