"""A parameter-only stand-in with the reference DiT's tensor names and layer types (no forward).

Used by the weight-loader tests to exercise every layout quickly and at any size (the peak-memory test
builds hundreds of MB of it). The end-to-end tests use the real DiT (model.dit) instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

AUDIO_LAYERS, AUDIO_CHANNELS = 12, 768


@dataclass(frozen=True)
class TinyWanConfig:
    dim: int = 16
    ffn_dim: int = 32
    num_layers: int = 2
    in_dim: int = 36
    out_dim: int = 16
    text_dim: int = 8
    freq_dim: int = 8
    img_dim: int = 8  # 1280 in the real model
    audio: bool = True
    audio_window: int = 5
    vae_scale: int = 4
    intermediate_dim: int = 4
    output_dim: int = 8
    context_tokens: int = 2


class RMSNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))


class SelfAttn(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q, self.norm_k = RMSNorm(dim), RMSNorm(dim)


class CrossAttn(SelfAttn):
    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.k_img, self.v_img = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.norm_k_img = RMSNorm(dim)


class AudioCrossAttn(nn.Module):
    def __init__(self, dim: int, audio_dim: int) -> None:
        super().__init__()
        self.q_linear = nn.Linear(dim, dim)
        self.kv_linear = nn.Linear(audio_dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)


class Block(nn.Module):
    def __init__(self, c: TinyWanConfig) -> None:
        super().__init__()
        self.self_attn = SelfAttn(c.dim)
        self.norm3 = nn.LayerNorm(c.dim)
        self.cross_attn = CrossAttn(c.dim)
        if c.audio:
            self.norm_x = nn.LayerNorm(c.dim)
            self.audio_cross_attn = AudioCrossAttn(c.dim, c.output_dim)
        self.ffn = nn.Sequential(nn.Linear(c.dim, c.ffn_dim), nn.GELU(), nn.Linear(c.ffn_dim, c.dim))
        self.modulation = nn.Parameter(torch.zeros(1, 6, c.dim))


class Head(nn.Module):
    def __init__(self, c: TinyWanConfig) -> None:
        super().__init__()
        self.head = nn.Linear(c.dim, 4 * c.out_dim)
        self.modulation = nn.Parameter(torch.zeros(1, 2, c.dim))


class AudioProj(nn.Module):
    def __init__(self, c: TinyWanConfig) -> None:
        super().__init__()
        per = AUDIO_LAYERS * AUDIO_CHANNELS
        self.proj1 = nn.Linear(c.audio_window * per, c.intermediate_dim)
        self.proj1_vf = nn.Linear((c.audio_window + c.vae_scale - 1) * per, c.intermediate_dim)
        self.proj2 = nn.Linear(c.intermediate_dim, c.intermediate_dim)
        self.proj3 = nn.Linear(c.intermediate_dim, c.context_tokens * c.output_dim)
        self.norm = nn.LayerNorm(c.output_dim)


class ImgEmb(nn.Module):
    def __init__(self, c: TinyWanConfig) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            nn.LayerNorm(c.img_dim), nn.Linear(c.img_dim, c.img_dim), nn.GELU(),
            nn.Linear(c.img_dim, c.dim), nn.LayerNorm(c.dim),
        )


class TinyWan(nn.Module):
    def __init__(self, c: TinyWanConfig) -> None:
        super().__init__()
        self.patch_embedding = nn.Conv3d(c.in_dim, c.dim, kernel_size=(1, 2, 2), stride=(1, 2, 2))
        self.text_embedding = nn.Sequential(nn.Linear(c.text_dim, c.dim), nn.GELU(), nn.Linear(c.dim, c.dim))
        self.time_embedding = nn.Sequential(nn.Linear(c.freq_dim, c.dim), nn.SiLU(), nn.Linear(c.dim, c.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(c.dim, 6 * c.dim))
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.num_layers))
        self.head = Head(c)
        self.img_emb = ImgEmb(c)
        if c.audio:
            self.audio_proj = AudioProj(c)


def reference_state(c: TinyWanConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random fp32 state dict for TinyWan(c), values of weight-like size (|x| ~ 0.05..3)."""
    g = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in TinyWan(c).state_dict().items()}
    out = {}
    for k, shape in shapes.items():
        t = torch.randn(shape, generator=g)
        out[k] = (1 + 0.1 * t) if k.endswith(("norm_q.weight", "norm_k.weight")) else 0.5 * t
    return out


def meta_model(c: TinyWanConfig) -> TinyWan:
    with torch.device("meta"):
        return TinyWan(c)
