"""The attentions of the DiT blocks: self-attention (3-D RoPE), plain cross-attention (FlashHead's
per-frame audio attention), text+image cross-attention and the InfiniteTalk audio cross-attention
(per latent frame, optional 1-D speaker RoPE).

All use `scaled_dot_product_attention` (flash / memory-efficient kernels on CUDA) with the default
scale 1/sqrt(head_dim) and no masks: every sequence here is unpadded.
Attribute names equal the reference's so state-dict keys match a real checkpoint.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from .layers import RMSNorm
from .parallel import SequenceShard
from .rope import apply_rotary
from .speakers import normalise_reference_map, reference_attention_map, reference_attention_sum, used_heads

logger = logging.getLogger(__name__)


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B, L, n*d] -> [B, n, L, d]"""
    return x.unflatten(-1, (num_heads, -1)).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """[B, n, L, d] -> [B, L, n*d]"""
    return x.transpose(1, 2).flatten(2)


def _qk_norm(dim: int, eps: float, enabled: bool) -> nn.Module:
    return RMSNorm(dim, eps=eps) if enabled else nn.Identity()


class SelfAttention(nn.Module):
    """Full self-attention over all video tokens with RMS-normed q/k and 3-D RoPE.

    Optionally also returns the reference-frame attention map that routes speakers (H >= 2).
    """

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True, eps: float = 1e-6, head_groups: int = 2) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_groups = head_groups
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = _qk_norm(dim, eps, qk_norm)
        self.norm_k = _qk_norm(dim, eps, qk_norm)

    def forward(
        self,
        x: torch.Tensor,
        rope: torch.Tensor,
        ref_masks: torch.Tensor | None = None,
        ref_tokens: int = 0,
        shard: SequenceShard | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # x: [B, L, C]; rope: (cos, sin) pairs [L, d/2, 2]; ref_masks: [B or 1, M, ref_tokens] or None
        # -> out [B, L, C], attn_map [B, M, L] or None
        # With a shard, x and rope hold this rank's chunk (L = shard.local) and attn_map is the
        # full-sequence map [B, M, shard.length], identical on every rank.
        n = self.num_heads
        q = apply_rotary(_heads(self.norm_q(self.q(x)), n), rope)
        k = apply_rotary(_heads(self.norm_k(self.k(x)), n), rope)
        v = _heads(self.v(x), n)
        if shard is not None:
            return self._forward_sharded(q, k, v, ref_masks, ref_tokens, shard)
        out = self.o(_merge(F.scaled_dot_product_attention(q, k, v)))
        attn_map = None
        if ref_masks is not None:
            with torch.no_grad():
                attn_map = reference_attention_map(q, k, ref_masks, ref_tokens, self.head_groups)
        return out, attn_map

    def _forward_sharded(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        ref_masks: torch.Tensor | None,
        ref_tokens: int,
        shard: SequenceShard,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # q, k, v: [B, n, local, d] -> all-to-all -> [B, n/W, padded, d]: whole sequence, some heads
        q, k, v = shard.to_heads(torch.stack([q, k, v])).unbind(0)
        length = shard.length
        k, v = k[:, :, :length], v[:, :, :length]  # padding keys never receive attention
        o = F.scaled_dot_product_attention(q, k, v)  # [B, n/W, padded, d]
        out = self.o(_merge(shard.to_tokens(o)))  # [B, local, C]
        attn_map = None
        if ref_masks is not None:
            with torch.no_grad():
                used = used_heads(self.num_heads, self.head_groups)
                lo, hi = shard.head_range(self.num_heads)
                mine = max(0, min(hi, used) - lo)
                if mine:
                    part = reference_attention_sum(q[:, :mine, :length], k[:, :mine], ref_masks, ref_tokens)
                else:
                    part = q.new_zeros(q.shape[0], length, ref_masks.shape[1], dtype=torch.float32)
                total = shard.all_reduce_sum(part)  # [B, L, M] summed over every used head
                attn_map = normalise_reference_map(total, used, ref_masks, q.dtype)
        return out, attn_map


class CrossAttention(nn.Module):
    """Queries attend to a context sequence; RMS-normed q/k (Wan's cross-attention; FlashHead's audio one)."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = _qk_norm(dim, eps, qk_norm)
        self.norm_k = _qk_norm(dim, eps, qk_norm)

    def _queries(self, x: torch.Tensor) -> torch.Tensor:
        # [B, L, C] -> [B, n, L, d]
        return _heads(self.norm_q(self.q(x)), self.num_heads)

    def _attend(self, q: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        # q: [B, n, L, d], ctx: [B, Lc, C] -> [B, L, C] (before `o`)
        k = _heads(self.norm_k(self.k(ctx)), self.num_heads)
        v = _heads(self.v(ctx), self.num_heads)
        return _merge(F.scaled_dot_product_attention(q, k, v))

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        # x: [B, L, C], ctx: [B, Lc, C] -> [B, L, C]
        return self.o(self._attend(self._queries(x), ctx))


class TextImageCrossAttention(CrossAttention):
    """Cross-attention to the text tokens plus, separately, to the CLIP image tokens; outputs summed."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True, eps: float = 1e-6) -> None:
        super().__init__(dim, num_heads, qk_norm, eps)
        self.k_img = nn.Linear(dim, dim)
        self.v_img = nn.Linear(dim, dim)
        self.norm_k_img = _qk_norm(dim, eps, qk_norm)

    def forward(self, x: torch.Tensor, ctx_text: torch.Tensor, ctx_img: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        # x: [B, L, C], ctx_text: [B, text_len, C], ctx_img: [B, 257, C] -> [B, L, C]
        n = self.num_heads
        q = self._queries(x)
        k_img = _heads(self.norm_k_img(self.k_img(ctx_img)), n)
        v_img = _heads(self.v_img(ctx_img), n)
        image = _merge(F.scaled_dot_product_attention(q, k_img, v_img))
        return self.o(self._attend(q, ctx_text) + image)


class AudioCrossAttention(nn.Module):
    """Each latent frame's visual tokens attend to that frame's audio tokens (all speakers).

    K and V come from one `kv_linear` whose output is laid out (2, heads, head_dim): K first.
    With speaker positions (H >= 2) q and k are rotated by the 1-D RoPE first; no qk-norm.
    """

    def __init__(self, dim: int, audio_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_linear = nn.Linear(dim, dim)
        self.kv_linear = nn.Linear(audio_dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self,
        x: torch.Tensor,
        audio: torch.Tensor,
        q_rope: torch.Tensor | None = None,
        k_rope: torch.Tensor | None = None,
        first_token: int = 0,
        frame_tokens: int | None = None,
    ) -> torch.Tensor:
        # x: [B, L, C], audio: [B, T, Na, Ca]; q_rope: [B, 1, L, d/2] rotations (complex or (cos, sin)
        # pairs); k_rope: [Na, d/2] rotations
        # -> [B, L, C]. By default x is every token (L = T*S, S tokens per latent frame). A
        # sequence-parallel chunk passes its global offset `first_token` and S = `frame_tokens`;
        # it may start and end inside frames; tokens past the last frame (padding) get meaningless values.
        b, length, c = x.shape
        n = self.num_heads
        q = _heads(self.q_linear(x), n)  # [B, n, L, d]
        if q_rope is not None:
            q = apply_rotary(q, q_rope)
        if frame_tokens is None:  # every token: L = T * S, no alignment (one graph for all sizes when compiled)
            return self.proj(self._attend(q, audio, k_rope).reshape(b, length, c))
        s = frame_tokens
        f0, lead = first_token // s, first_token % s
        nf = min(audio.shape[1] - f0, -(-(lead + length) // s))  # frames this chunk touches
        if nf <= 0:
            return x.new_zeros(b, length, c)
        span = nf * s
        if lead or span != length:  # align the chunk to whole frames (zero queries around it)
            q = F.pad(q, (0, 0, lead, max(0, span - lead - length)))[:, :, :span]
        out = self._attend(q, audio[:, f0 : f0 + nf], k_rope).reshape(b, span, c)
        if lead or span != length:
            out = F.pad(out[:, lead : lead + length], (0, 0, 0, max(0, lead + length - span)))
        return self.proj(out)

    def _attend(self, q: torch.Tensor, audio: torch.Tensor, k_rope: torch.Tensor | None) -> torch.Tensor:
        # q: [B, n, T*S, d] (whole frames), audio: [B, T, Na, Ca] -> [B, T*S, n, d]
        b, n, _, _ = q.shape
        frames = audio.shape[1]
        q = q.unflatten(2, (frames, -1)).transpose(1, 2).flatten(0, 1)  # [B*T, n, S, d]
        kv = self.kv_linear(audio).unflatten(-1, (2, n, -1))  # [B, T, Na, 2, n, d]
        k = kv[..., 0, :, :].flatten(0, 1).transpose(1, 2)  # [B*T, n, Na, d]
        v = kv[..., 1, :, :].flatten(0, 1).transpose(1, 2)
        if k_rope is not None:
            k = apply_rotary(k, k_rope)
        out = F.scaled_dot_product_attention(q, k, v)  # [B*T, n, S, d]
        return out.unflatten(0, (b, frames)).transpose(2, 3).flatten(1, 2)  # [B, T*S, n, d]
