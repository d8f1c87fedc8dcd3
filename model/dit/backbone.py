"""What every Wan2.1-based DiT here shares beyond its blocks: the latent/patch grid checks, the
timestep embeddings, unpatchify, seeded random weights and per-block compilation.

`WanBackbone` is a base class with behaviour only: it registers no module, so each model keeps the
reference's module order (the seeded `init_random_weights_` walks modules in that order). A subclass
defines `cfg` (a `DiTConfig`), `patch_embedding`, `time_embedding`, `time_projection` and `blocks`.
InfiniteTalk (`transformer.InfiniteTalkDiT`) and SoulX-FlashHead (`flashhead.FlashHeadDiT`) use it.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from .config import DiTConfig
from .layers import FP32LayerNorm, RMSNorm, linear_fp32, sinusoidal_embedding

logger = logging.getLogger(__name__)

COMPILE_RECOMPILE_LIMIT = 64
"""Compiles torch may make of the block code before falling back to eager (see `compile_blocks`)."""


def batch_to(t: torch.Tensor, b: int, name: str) -> torch.Tensor:
    """Broadcast a batch-1 tensor to b; reject other mismatches."""
    if t.shape[0] == b:
        return t
    if t.shape[0] == 1:
        return t.expand(b, *t.shape[1:])
    raise ValueError(f"{name} has batch {t.shape[0]}, expected {b} (or 1 to share it)")


class WanBackbone(nn.Module):
    """Behaviour shared by the Wan DiTs (see the module docstring for what a subclass must define)."""

    cfg: DiTConfig
    patch_embedding: nn.Conv3d
    time_embedding: nn.Sequential
    time_projection: nn.Sequential
    blocks: nn.ModuleList

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.patch_embedding.weight.device

    def _token_grid(self, x: torch.Tensor) -> tuple[int, int, int]:
        """Check the latent against the config; the (frames, h, w) grid of patches it makes."""
        cfg = self.cfg
        if x.dim() != 5 or x.shape[1] != cfg.out_dim:
            raise ValueError(f"x must be [B, {cfg.out_dim}, T, h, w], got {list(x.shape)}")
        _, _, frames, lat_h, lat_w = x.shape
        pt, ph, pw = cfg.patch_size
        if frames % pt or lat_h % ph or lat_w % pw:
            raise ValueError(f"latent size {frames}x{lat_h}x{lat_w} is not divisible by patch_size {cfg.patch_size}")
        return frames // pt, lat_h // ph, lat_w // pw

    def _check_audio(self, audio: torch.Tensor, frames: int, lead: tuple[str, ...]) -> None:
        """Audio windows must be [*lead, F, window, layers, width], F = 1 + vae_scale*(frames-1)."""
        cfg = self.cfg
        want = (cfg.video_frames(frames), cfg.audio_window, cfg.audio_layers, cfg.audio_width)
        if audio.dim() != len(lead) + 4 or tuple(audio.shape[len(lead):]) != want:
            raise ValueError(
                f"audio must be [{', '.join(lead)}, {want[0]}, {want[1]}, {want[2]}, {want[3]}] "
                f"({', '.join(lead)}, 1+{cfg.vae_scale}*(T-1) video frames, windows, wav2vec2 layers, width); "
                f"got {list(audio.shape)}"
            )

    def time_embeddings(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Timesteps [B] -> (e [B, C], e0 [B, 6C]), float32: the blocks' and head's modulation inputs."""
        e = linear_fp32(self.time_embedding[2], torch.nn.functional.silu(
            linear_fp32(self.time_embedding[0], sinusoidal_embedding(self.cfg.freq_dim, t))))
        e0 = linear_fp32(self.time_projection[1], torch.nn.functional.silu(e))
        return e, e0

    def unpatchify(self, tokens: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """[B, f*hh*ww, pt*ph*pw*c] (channel fastest) -> float32 [B, c, f*pt, hh*ph, ww*pw]."""
        f, hh, ww = grid
        pt, ph, pw = self.cfg.patch_size
        c = self.cfg.out_dim
        u = tokens.reshape(tokens.shape[0], f, hh, ww, pt, ph, pw, c)
        u = u.permute(0, 7, 1, 4, 2, 5, 3, 6)
        return u.reshape(tokens.shape[0], c, f * pt, hh * ph, ww * pw).float()

    # ----------------------------------------------------------------------------------------
    def compile_blocks(self, mode: str | None = None, backend: str = "inductor", **kwargs) -> WanBackbone:
        """torch.compile each block in place (the embeddings, speaker routing setup and head stay eager).

        mode: None / "max-autotune-no-cudagraphs" / "reduce-overhead" (CUDA graphs per block) ...;
        kwargs go to torch.compile (fullgraph, dynamic, options). Compiles lazily on the first
        forward; `decompile_blocks` undoes it.

        Shapes: every block shares one code object, traced without graph breaks and with symbolic
        sizes (dynamic=True unless given), so one graph serves every window size, frame count and
        batch (sessions x guidance branches) of a shape class. Classes: batch 1 vs more (torch
        specialises size 1) and each speaker count; a size that happens to equal another input's
        at the first trace costs one more compile (torch's duck sizing). The recompile limit is
        raised to `COMPILE_RECOMPILE_LIMIT` so that no class is ever sent to eager (torch's default
        of 8 does that silently).
        """
        import torch._dynamo

        dynamo = torch._dynamo.config
        limit = "recompile_limit" if hasattr(dynamo, "recompile_limit") else "cache_size_limit"  # torch < 2.7
        if getattr(dynamo, limit) < COMPILE_RECOMPILE_LIMIT:
            setattr(dynamo, limit, COMPILE_RECOMPILE_LIMIT)
        kwargs.setdefault("dynamic", True)
        for block in self.blocks:
            block.compile(mode=mode, backend=backend, **kwargs)
        logger.info("compiled %d DiT blocks (backend %s, mode %s)", len(self.blocks), backend, mode)
        return self

    def decompile_blocks(self) -> WanBackbone:
        for block in self.blocks:
            block._compiled_call_impl = None
        return self

    @torch.no_grad()
    def init_random_weights_(self, seed: int = 0, gain: float = 1.0) -> WanBackbone:
        """Fill every parameter in place with seeded random values on its own device (tests, benches).

        Norm scales 1 + 0.1N, biases 0.05N, modulations 0.1N, other weights gain*N/sqrt(fan_in).
        Works after `to_empty(device=...)` of a meta-built model.
        """
        gens: dict[torch.device, torch.Generator] = {}

        def randn(p: torch.Tensor) -> torch.Tensor:
            g = gens.get(p.device)
            if g is None:
                g = gens[p.device] = torch.Generator(device=p.device).manual_seed(seed)
            return torch.randn(p.shape, generator=g, device=p.device, dtype=torch.float32)

        for module in self.modules():
            for name, p in module.named_parameters(recurse=False):
                if isinstance(module, (nn.LayerNorm, RMSNorm, FP32LayerNorm)) and name == "weight":
                    val = 1 + 0.1 * randn(p)
                elif name == "bias":
                    val = 0.05 * randn(p)
                elif name == "modulation":
                    val = 0.1 * randn(p)
                else:
                    fan_in = math.prod(p.shape[1:]) if p.dim() > 1 else 1
                    val = gain * randn(p) / math.sqrt(fan_in)
                p.copy_(val)
        return self
