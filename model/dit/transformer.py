"""The InfiniteTalk DiT: Wan2.1 I2V transformer + audio adapter, batched.

One forward denoises a batch of same-shaped video latents: guidance branches (cond / no-text /
no-audio) and different sessions stack on the batch axis, and each element's result equals a
call with that element alone. Parameter names equal the reference `WanModel` state-dict keys, so
a real checkpoint loads with `load_state_dict(strict=True)`; build on the meta device and load
with `assign=True` to avoid allocating twice. The RoPE tables are cached per shape and device,
never stored in the state dict.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import torch
from torch import nn

from .audio_proj import AudioProjector
from .backbone import WanBackbone, batch_to
from .block import BlockContext, DiTBlock
from .config import DiTConfig
from .layers import Head, ImageEmbedding
from .parallel import SequenceParallel
from .rope import RopeCache, rope_1d_freqs
from .speakers import MAX_SPEAKERS, speaker_key_positions, token_masks
from .teacache import ResidualCache

logger = logging.getLogger(__name__)



class InfiniteTalkDiT(WanBackbone):
    """Wan2.1 I2V diffusion transformer with the InfiniteTalk/MultiTalk audio adapter."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dim = cfg.dim
        self.patch_embedding = nn.Conv3d(cfg.in_dim, dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(cfg.text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.num_layers))
        self.head = Head(dim, cfg.out_dim, cfg.patch_size, cfg.eps)
        self.img_emb = ImageEmbedding(cfg.clip_dim, dim, cfg.img_norm_eps)
        self.audio_proj = AudioProjector(cfg)
        self._rope = RopeCache(cfg.head_dim, cfg.rope_theta)
        self._sp: SequenceParallel | None = None

    # ----------------------------------------------------------------------------------------
    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor | Sequence[torch.Tensor],
        clip_fea: torch.Tensor,
        y: torch.Tensor,
        audio: torch.Tensor,
        ref_target_masks: torch.Tensor | None = None,
        *,
        audio_scale: float = 1.0,
        capture: dict[str, torch.Tensor] | None = None,
        residual_cache: ResidualCache | None = None,
    ) -> torch.Tensor:
        """Predict the flow for a batch of noisy latents.

        x: [B, out_dim, T, h, w] noisy latent. t: [B] (or scalar) timesteps in [0, 1000].
        context: [B, Lc, text_dim] text embeddings (Lc <= text_len; zero-padded to text_len here),
            or a list of B tensors [Lc_i, text_dim].
        clip_fea: [B, clip_tokens, clip_dim]. y: [B, in_dim - out_dim, T, h, w] (frame mask + cond latent).
        audio: [B, H, F, audio_window, audio_layers, audio_width], F = 1 + vae_scale*(T-1), H in 1..4.
        ref_target_masks: [H+1, h, w] or [B, H+1, h, w] speaker/background masks at latent size;
            required when H >= 2, ignored when H == 1.
        Tensors with batch 1 are shared across the batch. audio_scale multiplies the audio
        cross-attention output (0 skips it). Returns float32 [B, out_dim, T, h, w].

        capture: if a dict, intermediates are stored in it (golden `inter.*` names, batch first):
        patch_embedding [B, C, f, hh, ww], time_embedding [B, C], time_projection [B, 6C],
        text_embedding [B, text_len, C], img_emb [B, 257, C], audio_proj [B, H, T, ct, output_dim],
        block{i}.self_attn_out / .audio_cross_attn_out (before audio_scale) / .out [B, L, C],
        block{i}.x_ref_attn_map [B, H+1, L] (only when H >= 2), head [B, L, prod(patch)*out_dim].

        residual_cache: TeaCache state of this branch group: reuse=True skips the blocks and adds the
        stored residual, else the blocks run and their residual is stored (see `teacache`).
        Under `enable_sequence_parallel` every rank makes this same call and gets the same result.
        """
        cfg = self.cfg
        dtype = self.dtype
        grid = self._token_grid(x)
        b, _, frames, lat_h, lat_w = x.shape
        y = batch_to(y, b, "y")
        if y.shape[1:] != (cfg.in_dim - cfg.out_dim, frames, lat_h, lat_w):
            raise ValueError(f"y must be [B, {cfg.in_dim - cfg.out_dim}, {frames}, {lat_h}, {lat_w}], got {list(y.shape)}")

        # video tokens
        patches = self.patch_embedding(torch.cat([x, y], dim=1).to(dtype))  # [B, C, f, hh, ww]
        tokens = patches.flatten(2).transpose(1, 2).contiguous()  # [B, L, C], laid out like every block output

        # timestep (float32)
        e, e0 = self.time_embeddings(batch_to(t.reshape(-1), b, "t"))

        # text and image context
        ctx_text = self.text_embedding(self._pad_text(context, b).to(dtype))
        ctx_img = self.img_emb(batch_to(clip_fea, b, "clip_fea").to(dtype))

        # audio tokens
        speakers, audio_tokens = self._audio_tokens(audio, b, frames, capture)
        block_ctx = BlockContext(
            rope=self._rope.get(grid, tokens.device),
            ctx_text=ctx_text,
            ctx_img=ctx_img,
            audio=audio_tokens.to(dtype),
            num_speakers=speakers,
            ref_tokens=grid[1] * grid[2],
            audio_scale=float(audio_scale),
        )
        if speakers > 1:
            block_ctx = self._with_speaker_masks(block_ctx, ref_target_masks, b, (lat_h, lat_w), grid, tokens.device)

        if capture is not None:
            capture.update(
                patch_embedding=patches, time_embedding=e, time_projection=e0,
                text_embedding=ctx_text, img_emb=ctx_img,
            )
        if self._sp is not None:
            if capture is not None:
                raise ValueError("capture is not available under sequence parallelism; disable it to capture")
            block_ctx, tokens = self._scatter_for_sequence_parallel(block_ctx, tokens)
        e0 = e0.unflatten(1, (6, cfg.dim))
        if residual_cache is not None and residual_cache.reuse:
            tokens = residual_cache.apply(tokens)
        else:
            before = tokens
            for i, block in enumerate(self.blocks):
                tokens = block(tokens, e0, block_ctx, capture, f"block{i}.")
            if residual_cache is not None:
                residual_cache.store(before, tokens)

        out = self.head(tokens, e)  # [B, L, prod(patch)*out_dim] float32
        if block_ctx.shard is not None:
            out = block_ctx.shard.gather(out)
        if capture is not None:
            capture["head"] = out
        return self.unpatchify(out, grid)

    def _with_speaker_masks(
        self, block_ctx: BlockContext, ref_target_masks: torch.Tensor | None, b: int,
        latent_hw: tuple[int, int], grid: tuple[int, int, int], device: torch.device,
    ) -> BlockContext:
        """Two or more speakers: each speaker's token mask and the audio keys' class positions, checked."""
        cfg, speakers = self.cfg, block_ctx.num_speakers
        if ref_target_masks is None:
            raise ValueError(f"{speakers} speakers need ref_target_masks [{speakers + 1}, h, w] (speakers, background)")
        if tuple(ref_target_masks.shape[-2:]) != latent_hw:
            raise ValueError(
                f"ref_target_masks must be at latent size {latent_hw[0]}x{latent_hw[1]}, got {list(ref_target_masks.shape)}"
            )
        if ref_target_masks.shape[-3] != speakers + 1:
            raise ValueError(
                f"ref_target_masks has {ref_target_masks.shape[-3]} rows for {speakers} speakers; "
                f"pass {speakers + 1} masks (one per speaker, then the background)"
            )
        masks = token_masks(ref_target_masks.to(device), grid[1:], self.dtype)
        if masks.shape[0] not in (1, b):
            raise ValueError(f"ref_target_masks has batch {masks.shape[0]}, expected {b} or none")
        key_pos = speaker_key_positions(
            speakers, cfg.context_tokens, cfg.audio_rope_class_range, cfg.audio_rope_class_interval, device
        )
        return dataclasses.replace(block_ctx, ref_masks=masks, audio_k_rope=rope_1d_freqs(key_pos, cfg.head_dim))

    def _scatter_for_sequence_parallel(
        self, block_ctx: BlockContext, tokens: torch.Tensor
    ) -> tuple[BlockContext, torch.Tensor]:
        """This rank's chunk of the tokens and of the RoPE rows (identity rotations, 1 + 0i, on the padding)."""
        shard = self._sp.shard(tokens.shape[1])
        rope = torch.view_as_real(shard.scatter(torch.view_as_complex(block_ctx.rope), dim=0, fill=1.0))
        return dataclasses.replace(block_ctx, shard=shard, rope=rope), shard.scatter(tokens)

    # ----------------------------------------------------------------------------------------
    def enable_sequence_parallel(self, sp: SequenceParallel | None) -> InfiniteTalkDiT:
        """Spread every later forward over `sp`'s ranks (Ulysses); None returns to one process.

        Every rank must hold the same weights and make the same calls with the same inputs.
        """
        if sp is not None:
            sp.check_heads(self.cfg.num_heads)
        self._sp = sp
        return self

    @property
    def sequence_parallel(self) -> SequenceParallel | None:
        return self._sp

    # ----------------------------------------------------------------------------------------
    def _pad_text(self, context: torch.Tensor | Sequence[torch.Tensor], b: int) -> torch.Tensor:
        """Zero-pad text embeddings to text_len -> [B, text_len, text_dim]."""
        cfg = self.cfg
        rows = list(context) if not isinstance(context, torch.Tensor) else None
        if rows is None:
            context = batch_to(context, b, "context")
            if context.dim() != 3:
                raise ValueError(f"context must be [B, Lc, {cfg.text_dim}], got {list(context.shape)}")
            rows = list(context)
        if len(rows) != b:
            raise ValueError(f"context has {len(rows)} entries, expected {b}")
        out = rows[0].new_zeros(b, cfg.text_len, cfg.text_dim)
        for i, r in enumerate(rows):
            if r.dim() != 2 or r.shape[1] != cfg.text_dim or r.shape[0] > cfg.text_len:
                raise ValueError(f"context[{i}] must be [Lc <= {cfg.text_len}, {cfg.text_dim}], got {list(r.shape)}")
            out[i, : r.shape[0]] = r
        return out

    def _audio_tokens(
        self, audio: torch.Tensor, b: int, frames: int, capture: dict[str, torch.Tensor] | None
    ) -> tuple[int, torch.Tensor]:
        """audio [B, H, F, W, layers, width] -> (H, tokens [B, T, H*context_tokens, output_dim])."""
        self._check_audio(audio, frames, ("B", "H"))
        audio = batch_to(audio, b, "audio")
        speakers = audio.shape[1]
        if not 1 <= speakers <= MAX_SPEAKERS:
            raise ValueError(f"{speakers} speakers: supported are 1..{MAX_SPEAKERS}")
        proj = self.audio_proj(audio.flatten(0, 1).to(self.dtype))  # [B*H, T, ct, Ca]
        proj = proj.unflatten(0, (b, speakers))  # [B, H, T, ct, Ca]
        if capture is not None:
            capture["audio_proj"] = proj
        return speakers, proj.transpose(1, 2).flatten(2, 3)  # [B, T, H*ct, Ca]
