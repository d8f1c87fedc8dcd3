"""The SoulX-FlashHead DiT (reference `WanModelAudioProject`): Wan2.1 blocks whose only
cross-attention is to audio, no text and no CLIP.

Each latent frame's visual tokens attend to that frame's `context_tokens` audio tokens through a
plain Wan cross-attention (q/k/v/o with RMS-normed q and k); the conditioning input `y` is the VAE
latent of the reference image repeated over the window (not mask + first frame as in InfiniteTalk).
Self-attention, RoPE, timestep embedding, head and audio projector are the InfiniteTalk DiT's own
modules (`backbone`, `block`, `attention`, `audio_proj`). Parameter names equal the reference's
state-dict keys; its `text_embedding.*` and `audio_emb.*`, built but never used, are not modules
here, so a loader drops them by name (`FLASHHEAD_UNUSED_PREFIXES`).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from .attention import CrossAttention, SelfAttention
from .audio_proj import AudioProjector
from .backbone import WanBackbone, batch_to
from .block import gated_add, modulate, modulation_terms
from .config import DiTConfig
from .layers import FP32LayerNorm, Head
from .rope import RopeCache

logger = logging.getLogger(__name__)

FLASHHEAD_UNUSED_PREFIXES = ("text_embedding.", "audio_emb.")
"""Checkpoint keys the reference builds but never reads in its forward (dropped on load)."""


class FlashHeadBlock(nn.Module):
    """Modulated self-attention, per-frame audio cross-attention (norm3, not gated), modulated FFN."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        dim = cfg.dim
        self.self_attn = SelfAttention(dim, cfg.num_heads, cfg.qk_norm, cfg.eps)
        self.cross_attn = CrossAttention(dim, cfg.num_heads, cfg.qk_norm, cfg.eps)
        self.norm1 = FP32LayerNorm(dim, eps=cfg.eps, elementwise_affine=False)
        self.norm2 = FP32LayerNorm(dim, eps=cfg.eps, elementwise_affine=False)
        self.norm3 = FP32LayerNorm(dim, eps=cfg.eps)
        self.ffn = nn.Sequential(nn.Linear(dim, cfg.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, e0: torch.Tensor, rope: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        # x: [B, L, C]; e0: [B, 6, C] float32; rope: [L, d/2, 2]; audio: [B, T, ct, C], L = T * S -> [B, L, C]
        shift1, scale1, gate1, shift2, scale2, gate2 = modulation_terms(self.modulation, e0)
        y, _ = self.self_attn(modulate(self.norm1, x, shift1, scale1), rope)
        x = gated_add(x, y, gate1)
        b, length, c = x.shape
        frames = audio.shape[1]
        per_frame = self.norm3(x).reshape(b * frames, length // frames, c)  # each frame's tokens ...
        a = self.cross_attn(per_frame, audio.flatten(0, 1))  # ... attend to that frame's audio tokens
        x = x + a.reshape(b, length, c)
        return gated_add(x, self.ffn(modulate(self.norm2, x, shift2, scale2)), gate2)


class FlashHeadDiT(WanBackbone):
    """Wan2.1-1.3B with FlashHead's audio conditioning; batched (the reference handles batch 1 only)."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        if cfg.output_dim != cfg.dim:
            raise ValueError(f"FlashHead's audio tokens must be model-wide: output_dim {cfg.output_dim} != dim {cfg.dim}")
        if cfg.patch_size[0] != 1:
            raise ValueError(f"FlashHead pairs audio with latent frames one to one: patch_size[0] must be 1, got {cfg.patch_size}")
        self.cfg = cfg
        dim = cfg.dim
        self.patch_embedding = nn.Conv3d(cfg.in_dim, dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.blocks = nn.ModuleList(FlashHeadBlock(cfg) for _ in range(cfg.num_layers))
        self.head = Head(dim, cfg.out_dim, cfg.patch_size, cfg.eps)
        self.audio_proj = AudioProjector(cfg)
        self._rope = RopeCache(cfg.head_dim, cfg.rope_theta)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        audio: torch.Tensor,
        y: torch.Tensor,
        *,
        capture: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Predict the flow for a batch of noisy latents.

        x: [B, out_dim, T, h, w]; t: [B] (or one value) timesteps in [0, 1000];
        audio: [B, F, audio_window, audio_layers, audio_width] per-video-frame wav2vec2 windows,
            F = 1 + vae_scale*(T-1); y: [B, in_dim - out_dim, T, h, w] the reference image's latent.
        Tensors with batch 1 are shared across the batch. Returns float32 [B, out_dim, T, h, w].
        capture: if a dict, intermediates are stored in it under the golden `inter.*` names:
            patch_embedding, t (time embedding), time_projection, audio_proj, block{i}.out, head.
        """
        cfg = self.cfg
        dtype = self.dtype
        grid = self._token_grid(x)
        b, _, frames, lat_h, lat_w = x.shape
        y = batch_to(y, b, "y")
        if y.shape[1:] != (cfg.y_dim, frames, lat_h, lat_w):
            raise ValueError(f"y must be [B, {cfg.y_dim}, {frames}, {lat_h}, {lat_w}], got {list(y.shape)}")
        patches = self.patch_embedding(torch.cat([x, y], dim=1).to(dtype))  # [B, C, f, hh, ww]
        tokens = patches.flatten(2).transpose(1, 2).contiguous()  # [B, L, C]
        e, e0 = self.time_embeddings(batch_to(t.reshape(-1), b, "t"))
        self._check_audio(audio, frames, ("B",))
        audio_tokens = self.audio_proj(batch_to(audio, b, "audio").to(dtype))
        rope = self._rope.get(grid, tokens.device)
        if capture is not None:
            capture.update(patch_embedding=patches, t=e, time_projection=e0, audio_proj=audio_tokens)
        e0 = e0.unflatten(1, (6, cfg.dim))
        for i, block in enumerate(self.blocks):
            tokens = block(tokens, e0, rope, audio_tokens)
            if capture is not None:
                capture[f"block{i}.out"] = tokens
        out = self.head(tokens, e)  # [B, L, prod(patch)*out_dim] float32
        if capture is not None:
            capture["head"] = out
        return self.unpatchify(out, grid)
