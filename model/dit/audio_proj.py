"""The InfiniteTalk audio projector: per-video-frame wav2vec windows -> audio tokens per latent frame.

Latent frame 0 stands for video frame 0 alone; every later latent frame stands for `vae_scale`
video frames. Their windowed wav2vec features are pooled into one vector per latent frame, then
expanded into `context_tokens` tokens of width `output_dim` (keys `audio_proj.*`).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from .config import DiTConfig
from .layers import FP32LayerNorm

logger = logging.getLogger(__name__)


def select_latent_windows(audio: torch.Tensor, vae_scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split per-video-frame windows into the first frame and per-latent-frame groups.

    audio: [N, F, W, layers, width] with F = 1 + vae_scale*(T-1)
    -> first [N, 1, W, layers, width],
       later [N, T-1, W + vae_scale - 1, layers, width]: for each group of vae_scale video frames,
       windows 0..W//2 of its first frame, the middle window of each inner frame, and windows
       W//2..W-1 of its last frame, in that order.
    """
    n, f, w = audio.shape[:3]
    if (f - 1) % vae_scale:
        raise ValueError(f"audio has {f} video frames; need 1 + {vae_scale}*(latent_frames-1)")
    mid = w // 2
    later = audio[:, 1:].unflatten(1, ((f - 1) // vae_scale, vae_scale))  # [N, T-1, vae_scale, W, ...]
    head = later[:, :, 0, : mid + 1]
    inner = later[:, :, 1:-1, mid]
    tail = later[:, :, -1, mid:]
    return audio[:, :1], torch.cat([head, inner, tail], dim=2)


class AudioProjector(nn.Module):
    """Audio windows -> [N, T, context_tokens, output_dim] tokens (N = batch * speakers)."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.vae_scale = cfg.vae_scale
        self.context_tokens = cfg.context_tokens
        self.output_dim = cfg.output_dim
        per_window = cfg.audio_layers * cfg.audio_width
        self.proj1 = nn.Linear(cfg.audio_window * per_window, cfg.intermediate_dim)
        self.proj1_vf = nn.Linear(cfg.audio_window_vf * per_window, cfg.intermediate_dim)
        self.proj2 = nn.Linear(cfg.intermediate_dim, cfg.intermediate_dim)
        self.proj3 = nn.Linear(cfg.intermediate_dim, cfg.context_tokens * cfg.output_dim)
        self.norm = FP32LayerNorm(cfg.output_dim, eps=cfg.audio_norm_eps) if cfg.norm_output_audio else nn.Identity()

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        # audio: [N, F, W, layers, width] -> [N, T, context_tokens, output_dim]
        first, later = select_latent_windows(audio, self.vae_scale)
        h_first = torch.relu(self.proj1(first.flatten(2)))  # [N, 1, inter]
        h_later = torch.relu(self.proj1_vf(later.flatten(2)))  # [N, T-1, inter]
        h = torch.relu(self.proj2(torch.cat([h_first, h_later], dim=1)))
        tokens = self.proj3(h).unflatten(-1, (self.context_tokens, self.output_dim))
        return self.norm(tokens)
