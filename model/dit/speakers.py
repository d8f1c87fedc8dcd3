"""Multi-speaker routing of the audio cross-attention (only used when there are H >= 2 speakers).

Each visual token is given a 1-D position from how strongly it attends to each speaker's region of
the reference frame; each speaker's audio tokens get a fixed position. RoPE on those positions makes
a token prefer the audio of the speaker whose region it belongs to.

Buckets (reference: `class_range` R = 24, `class_interval` I = 4, written for two speakers):
speaker k's tokens are scaled into [k*(R-I), k*(R-I) + I] and its audio keys sit at the middle,
k*(R-I) + I/2; background tokens sit at R // 2. For H = 2 that is exactly the reference
(speaker 1 in [0, 4] with keys at 2, speaker 2 in [20, 24] with keys at 22, background 12).

For H > 2 the reference has no coherent rule: its single-GPU path gives the first half of the
audio tokens position 2 and the rest 22, normalises only map rows 0 and 1, and indexes a 3-column
table with an argmax over all H+1 rows (an IndexError as soon as a token's argmax is row >= 3);
its sequence-parallel path puts speaker 1 at 2 and every other speaker at 22. Its pipeline only
ever passes H <= 2. We extend the H = 2 pattern by the same stride instead: speaker 3 in [40, 44]
(keys 42), speaker 4 in [60, 64] (keys 62), background still 12. The released weights were trained
with at most two speakers, so H > 2 is outside what they have seen.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

MAX_SPEAKERS = 4


def token_masks(ref_target_masks: torch.Tensor, grid_hw: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
    """Latent-resolution region masks -> per-token 0/1 masks of the reference frame.

    ref_target_masks: [M, h, w] or [B, M, h, w] (rows: speaker 1..H, then background)
    -> [1 or B, M, Nh*Nw]: nearest resize to the token grid, (> 0), row-major flatten.
    """
    m = ref_target_masks
    if m.dim() == 3:
        m = m[None]
    if m.dim() != 4:
        raise ValueError(f"ref_target_masks must be [M, h, w] or [B, M, h, w], got {list(ref_target_masks.shape)}")
    m = F.interpolate(m.float(), size=grid_hw, mode="nearest")
    return (m > 0).flatten(2).to(dtype)


def reference_attention_sum(q: torch.Tensor, k: torch.Tensor, masks: torch.Tensor, ref_tokens: int) -> torch.Tensor:
    """Attention mass each query pays to each region of the reference frame, summed over q's heads.

    q, k: [B, n, L, d] (every head of q is summed; callers pick the heads); masks: [B or 1, M, L0].
    Per head: A = softmax(q k^T / sqrt(d)) over the first L0 = ref_tokens keys; mass = sum_j A_j M_j.
    Computed as attention with the masks as values, so the [L, L0] matrix is never materialised.
    -> float32 [B, L, M].
    """
    b, n, _, _ = q.shape
    rows = masks.shape[1]
    # Values zero-padded to the head width so the fused (flash) kernels accept them.
    values = F.pad(masks.to(q.dtype).transpose(1, 2), (0, max(q.shape[-1] - rows, 0)))  # [B or 1, L0, d]
    values = values[:, None].expand(b, n, ref_tokens, values.shape[-1]).contiguous()
    mass = F.scaled_dot_product_attention(q, k[:, :, :ref_tokens], values)  # [B, n, L, d]
    return mass[..., :rows].float().sum(dim=1)


def normalise_reference_map(total: torch.Tensor, heads: int, masks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Head-summed mass [B, L, M] -> mean over `heads`, divided by each region's area -> [B, M, L]."""
    area = masks.float().sum(dim=-1).clamp_min(1.0)  # [B or 1, M]
    return (total / heads / area[:, None, :]).transpose(1, 2).to(dtype)


def used_heads(num_heads: int, head_groups: int) -> int:
    """Heads the reference averages: head_groups equal groups, leftover heads dropped."""
    return head_groups * (num_heads // head_groups)


def reference_attention_map(
    q: torch.Tensor, k: torch.Tensor, masks: torch.Tensor, ref_tokens: int, head_groups: int = 2
) -> torch.Tensor:
    """How much attention each token pays to each region of the reference (first latent) frame.

    q, k: [B, n, L, d] self-attention queries/keys after 3-D RoPE; masks: [B or 1, M, L0] with
    L0 = ref_tokens. Per head: A = softmax(q k^T / sqrt(d)) over the L0 reference keys; value =
    sum_j A_j M_j / sum_j M_j. Averaged over the first head_groups * (n // head_groups) heads (the
    reference averages per equal head group, then over groups, dropping leftover heads).
    -> [B, M, L]. An empty mask row gives zeros (the reference would give NaN).
    """
    used = used_heads(q.shape[1], head_groups)
    total = reference_attention_sum(q[:, :used], k[:, :used], masks, ref_tokens)
    return normalise_reference_map(total, used, masks, q.dtype)


def speaker_bucket_starts(num_speakers: int, class_range: int, class_interval: int) -> list[int]:
    """Lower end of each speaker's position range: k * (class_range - class_interval)."""
    return [k * (class_range - class_interval) for k in range(num_speakers)]


def speaker_query_positions(
    attn_map: torch.Tensor, num_speakers: int, class_range: int = 24, class_interval: int = 4
) -> torch.Tensor:
    """Fractional 1-D RoPE position of every visual token.

    attn_map: [B, H+1, L] (rows: speakers, then background). Row k is min-max normalised over L
    into its bucket [start_k, start_k + class_interval]; the background row maps to class_range // 2;
    each token takes the value of the row where its map is largest. -> [B, L] (the map's dtype).
    """
    b, rows, length = attn_map.shape
    if rows != num_speakers + 1:
        raise ValueError(
            f"ref_target_masks has {rows} rows for {num_speakers} speakers; "
            f"pass {num_speakers + 1} masks (one per speaker, then the background)"
        )
    lo = attn_map[:, :num_speakers].amin(dim=-1, keepdim=True)
    hi = attn_map[:, :num_speakers].amax(dim=-1, keepdim=True)
    unit = (attn_map[:, :num_speakers] - lo) / (hi - lo + 1e-8)
    # arange on the device (no host-to-device copy, so a CUDA graph can capture this)
    starts = torch.arange(num_speakers, device=attn_map.device, dtype=attn_map.dtype) * (class_range - class_interval)
    scaled = unit * class_interval + starts[None, :, None]
    background = torch.full((b, 1, length), float(class_range // 2), dtype=attn_map.dtype, device=attn_map.device)
    table = torch.cat([scaled, background], dim=1)  # [B, H+1, L]
    choice = attn_map.argmax(dim=1, keepdim=True)  # [B, 1, L]
    return table.gather(1, choice)[:, 0]


def speaker_key_positions(
    num_speakers: int,
    tokens_per_speaker: int,
    class_range: int = 24,
    class_interval: int = 4,
    device: torch.device | None = None,
) -> torch.Tensor:
    """1-D position of each audio token of one latent frame (speaker-major) -> [H * tokens]."""
    starts = torch.arange(num_speakers, dtype=torch.float32, device=device) * (class_range - class_interval)
    return (starts + class_interval / 2).repeat_interleave(tokens_per_speaker)
