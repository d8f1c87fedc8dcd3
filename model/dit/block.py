"""One DiT block: modulated self-attention, text/image cross-attention, audio cross-attention and a
modulated FFN, each added to the residual stream.

    x += SelfAttn(LN(x)*(1+scale1) + shift1) * gate1          (modulation in float32)
    x += TextImgCrossAttn(norm3(x))
    x += audio_scale * AudioCrossAttn(norm_x(x))               (not gated by the timestep)
    x += FFN(LN(x)*(1+scale2) + shift2) * gate2
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from .attention import AudioCrossAttention, SelfAttention, TextImageCrossAttention
from .config import DiTConfig
from .layers import FP32LayerNorm
from .parallel import SequenceShard
from .rope import rope_1d_pairs
from .speakers import speaker_query_positions

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlockContext:
    """What every block of one forward shares (computed once by the transformer).

    rope: 3-D RoPE rotations as (cos, sin) pairs, float32 [L, d/2, 2]. ctx_text [B, text_len, C], ctx_img [B, 257, C].
    audio: audio tokens [B, T, H*context_tokens, output_dim], speaker-major within a frame.
    num_speakers: H. For H >= 2: ref_masks [B or 1, H+1, ref_tokens] (per-token region masks of the
    reference frame) and audio_k_rope (complex rotations [H*context_tokens, d/2] of the audio keys).
    """

    rope: torch.Tensor
    ctx_text: torch.Tensor
    ctx_img: torch.Tensor
    audio: torch.Tensor
    num_speakers: int
    ref_tokens: int
    ref_masks: torch.Tensor | None = None
    audio_k_rope: torch.Tensor | None = None
    audio_scale: float = 1.0
    shard: SequenceShard | None = None


def modulation_terms(modulation: torch.Tensor, e0: torch.Tensor) -> list[torch.Tensor]:
    """The block's six float32 modulation rows (shift1, scale1, gate1, shift2, scale2, gate2), each [B, 1, C].

    modulation: the block's parameter [1, 6, C]; e0: the timestep projection [B, 6, C] float32.
    """
    mod = modulation.float() + e0
    return [m[:, None, :] for m in mod.unbind(1)]  # noqa: C416


def modulate(norm: nn.Module, x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """norm(x) * (1 + scale) + shift in float32, cast back to x's dtype (the input of attention / FFN)."""
    return (norm(x).float() * (1 + scale) + shift).to(x.dtype)


def gated_add(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """x + y * gate in float32, cast back to x's dtype (a gated residual update)."""
    return (x.float() + y.float() * gate).to(x.dtype)


class DiTBlock(nn.Module):
    """One transformer block (attribute names = reference `WanAttentionBlock` for key parity)."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        dim = cfg.dim
        self.cfg = cfg
        self.norm1 = FP32LayerNorm(dim, eps=cfg.eps, elementwise_affine=False)
        self.self_attn = SelfAttention(dim, cfg.num_heads, cfg.qk_norm, cfg.eps, cfg.ref_attn_head_groups)
        self.norm3 = FP32LayerNorm(dim, eps=cfg.eps) if cfg.cross_attn_norm else nn.Identity()
        self.cross_attn = TextImageCrossAttention(dim, cfg.num_heads, cfg.qk_norm, cfg.eps)
        self.norm2 = FP32LayerNorm(dim, eps=cfg.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(dim, cfg.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)
        self.audio_cross_attn = AudioCrossAttention(dim, cfg.output_dim, cfg.num_heads)
        self.norm_x = FP32LayerNorm(dim, eps=cfg.eps) if cfg.norm_input_visual else nn.Identity()

    def forward(
        self,
        x: torch.Tensor,
        e0: torch.Tensor,
        ctx: BlockContext,
        capture: dict[str, torch.Tensor] | None = None,
        prefix: str = "",
    ) -> torch.Tensor:
        # x: [B, L, C] (param dtype), e0: [B, 6, C] float32 -> [B, L, C]
        shift1, scale1, gate1, shift2, scale2, gate2 = modulation_terms(self.modulation, e0)

        multi = ctx.num_speakers > 1
        h = modulate(self.norm1, x, shift1, scale1)
        y, attn_map = self.self_attn(h, ctx.rope, ctx.ref_masks if multi else None, ctx.ref_tokens, ctx.shard)
        x = gated_add(x, y, gate1)
        if capture is not None:
            capture[prefix + "self_attn_out"] = y
            if attn_map is not None:
                capture[prefix + "x_ref_attn_map"] = attn_map

        x = x + self.cross_attn(self.norm3(x), ctx.ctx_text, ctx.ctx_img)

        if ctx.audio_scale != 0.0:
            q_rope = None
            if multi:
                pos = speaker_query_positions(
                    attn_map, ctx.num_speakers, self.cfg.audio_rope_class_range, self.cfg.audio_rope_class_interval
                )  # [B, L] over the whole sequence
                if ctx.shard is not None:
                    pos = ctx.shard.scatter(pos)
                q_rope = rope_1d_pairs(pos, self.cfg.head_dim)[:, None]
            first, per_frame = (ctx.shard.start, ctx.ref_tokens) if ctx.shard is not None else (0, None)
            a = self.audio_cross_attn(
                self.norm_x(x), ctx.audio, q_rope, ctx.audio_k_rope if multi else None, first, per_frame
            )
            x = x + (a if ctx.audio_scale == 1.0 else a * ctx.audio_scale)
            if capture is not None:
                capture[prefix + "audio_cross_attn_out"] = a

        x = gated_add(x, self.ffn(modulate(self.norm2, x, shift2, scale2)), gate2)
        if capture is not None:
            capture[prefix + "out"] = x
        return x
