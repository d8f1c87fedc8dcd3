"""InfiniteTalk, one window at a time: condition on a frame, denoise with audio, decode.

`InfiniteTalkPipeline` holds the four networks (DiT, VAE, CLIP vision tower, text embeddings) and
offers the steps the reference's window loop is made of, each usable on its own:

    cond   = pipe.condition(cond_image, frame_num)          # CLIP features + y (mask | VAE latent)
    motion = pipe.encode_motion(pixels)                      # previous frames -> clean motion latent
    latent = pipe.denoise(cond, audio, motion, noise, settings)
    frames = pipe.decode(latent)  /  pipe.decode_stream(latent)   # clamped to [-1, 1]

The long-video loop (`long_video.py`) and the live backend compose these; both make exactly the
same DiT calls, so offline renders and live sessions give the same frames for the same inputs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from model.clip_vision import CLIPVisionEncoder
from model.dit import InfiniteTalkDiT
from model.dit.graphs import CudaGraphDiT
from model.dit.teacache import ResidualCache, TeaCacheSettings, plan_teacache
from model.sampling import (
    BRANCH_SPECS,
    EULER,
    APGGuidance,
    combine_guidance,
    euler_step,
    x0_renoise_step,
)
from model.vae import VAEConfig

from .settings import WindowSettings
from .timing import StageTimes, maybe_stage

log = logging.getLogger(__name__)

StepTrace = Callable[[str, int, Tensor], None]
"""Observer of a window's sampling: called with (name, step, tensor) for "latent" (the DiT input of
step i, and i == steps for the final latent) and each branch prediction ("pred_cond", ...)."""


class WindowVAE(Protocol):
    """What the pipeline calls on its VAE: a `WanVAE`, or on rank 0 of a multi-process model a
    `BroadcastingVAE` (the same calls, split over the processes)."""

    @property
    def cfg(self) -> VAEConfig: ...

    @property
    def dtype(self) -> torch.dtype: ...

    def encode(self, video: Tensor, normalize: bool = True) -> Tensor: ...

    def decode(self, z: Tensor, clamp: bool = True) -> Tensor: ...

    def decode_stream(self, z: Tensor, clamp: bool = True) -> Iterator[Tensor]: ...


@dataclass(frozen=True)
class TextConditioning:
    """Prompt and negative-prompt embeddings, unpadded: [Lp, text_dim], [Ln, text_dim]."""

    prompt: Tensor
    negative: Tensor


@dataclass(frozen=True)
class SourceKeep:
    """Keep part of a source video and regenerate only the rest (e.g. the head), per denoising step.

    latent: [16, T, h, w] VAE latent of the window's source frames. mask: [1, 1, h, w] or [1, T, h, w],
    1 where the source is kept, 0 where the model generates (soft values blend).
    """

    latent: Tensor
    mask: Tensor


@dataclass
class WindowCondition:
    """What a window is conditioned on besides audio and motion.

    cond_image: [3, 1, H, W] in [-1, 1]. clip_fea: [1, tokens, clip_dim]. y: [20, T, h, w] =
    4 mask channels (1 on latent frame 0) + VAE latent of [cond_image, F-1 zero frames].
    """

    cond_image: Tensor
    clip_fea: Tensor
    y: Tensor


class InfiniteTalkPipeline:
    """The networks plus the per-window operations. Pure compute: no clocks, no threads."""

    def __init__(
        self,
        dit: InfiniteTalkDiT,
        vae: WindowVAE,
        clip: CLIPVisionEncoder,
        text: TextConditioning,
        device: torch.device | str = "cpu",
        *,
        dit_forward: Callable[..., Tensor] | None = None,
    ) -> None:
        """dit_forward: what sampling calls instead of `dit` itself (rank 0's `BroadcastingDiT` of a
        multi-process model); the DiT's own attributes (dtype, time embeddings) are read from `dit`."""
        self.dit = dit
        self.vae = vae
        self.clip = clip
        self.device = torch.device(device)
        self.text = TextConditioning(text.prompt.to(self.device), text.negative.to(self.device))
        self.times: StageTimes | None = None  # attach one to measure per-stage time
        self._base_forward: Callable[..., Tensor] = dit_forward or dit
        self.dit_forward = self._base_forward  # what sampling calls (a CudaGraphDiT after use_cuda_graphs)
        self._teacache_plans: dict[tuple, tuple[bool, ...]] = {}

    def use_cuda_graphs(self, enabled: bool = True, max_graphs: int = 4) -> None:
        """Replay the DiT forward from CUDA graphs (one per window shape); a no-op off CUDA (eager)."""
        if enabled and self._base_forward is not self.dit:
            raise ValueError("CUDA graphs replay a single-process DiT; they are not combined with a DiT split "
                             "over processes (sequence parallel)")
        self.dit_forward = CudaGraphDiT(self.dit, max_graphs=max_graphs) if enabled else self._base_forward

    def teacache_plan(self, settings: WindowSettings) -> tuple[bool, ...]:
        """Which sampling steps run the DiT blocks under settings.teacache (all True when off)."""
        tc: TeaCacheSettings | None = settings.teacache
        if tc is None or tc.threshold <= 0:
            return (True,) * settings.steps
        timesteps = settings.timesteps()[: settings.steps]
        key = (tc, tuple(timesteps.tolist()))
        plan = self._teacache_plans.get(key)
        if plan is None:
            with torch.no_grad():
                e, e0 = self.dit.time_embeddings(timesteps.to(self.dit.device))
            modulated = e0 if tc.use_ret_steps else e
            plan = self._teacache_plans[key] = plan_teacache(list(modulated.cpu()), tc)
            log.info("TeaCache (threshold %.3g): %d of %d steps reuse the residual", tc.threshold,
                     plan.count(False), settings.steps)
        return plan

    @property
    def vae_stride(self) -> int:
        return self.vae.cfg.spatial_stride

    # ------------------------------------------------------------------ conditioning
    @torch.no_grad()
    def condition(self, cond_image: Tensor, frame_num: int) -> WindowCondition:
        """cond_image [3, 1, H, W] in [-1, 1] -> CLIP features and the DiT's `y` input."""
        if cond_image.dim() != 4 or cond_image.shape[:2] != (3, 1):
            raise ValueError(f"cond_image must be [3, 1, H, W], got {list(cond_image.shape)}")
        img = cond_image.to(self.device, torch.float32)
        _, _, h, w = img.shape
        with maybe_stage(self.times, "clip"):
            clip_fea = self.clip.encode_image(img[None].to(self.clip_dtype)).float()
        clip_video = torch.cat([img, img.new_zeros(3, frame_num - 1, h, w)], dim=1)
        with maybe_stage(self.times, "vae_encode_condition"):
            latent = self.vae.encode(clip_video[None].to(self.vae.dtype))[0]  # [16, T, h, w]
        mask = torch.zeros(4, *latent.shape[1:], device=self.device, dtype=latent.dtype)
        mask[:, 0] = 1.0
        return WindowCondition(img, clip_fea, torch.cat([mask, latent], dim=0))

    @property
    def clip_dtype(self) -> torch.dtype:
        return next(self.clip.parameters()).dtype

    @torch.no_grad()
    def encode_motion(self, pixels: Tensor) -> Tensor:
        """pixels [3, M, H, W] in [-1, 1] -> clean motion latent [16, 1 + (M-1)//4, h, w]."""
        with maybe_stage(self.times, "vae_encode_motion"):
            return self.vae.encode(pixels[None].to(self.device, self.vae.dtype))[0]

    # ------------------------------------------------------------------ sampling
    def _branch_inputs(self, names: tuple[str, ...], audio: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        contexts, audios = [], []
        zeros = torch.zeros_like(audio)
        for name in names:
            spec = BRANCH_SPECS[name]
            contexts.append(self.text.negative if spec.negative_text else self.text.prompt)
            audios.append(zeros[:1] if spec.zero_audio else audio)
        return contexts, audios

    def _predict(
        self,
        latent: Tensor,
        t: Tensor,
        cond: WindowCondition,
        names: tuple[str, ...],
        contexts: list[Tensor],
        audios: list[Tensor],
        masks: Tensor | None,
        settings: WindowSettings,
        caches: dict[tuple[int, ...], ResidualCache] | None = None,
        reuse: bool = False,
    ) -> dict[str, Tensor]:
        """One DiT evaluation per guidance branch; branches with the same speaker count share a call.

        caches: TeaCache residuals per branch group (created on first use); reuse skips the blocks.
        """
        groups: dict[int, list[int]] = {}
        for i, a in enumerate(audios):
            groups.setdefault(a.shape[0] if settings.batch_branches else -1 - i, []).append(i)
        preds: dict[str, Tensor] = {}
        dit_dtype = self.dit.dtype
        for idx in groups.values():
            b = len(idx)
            cache = None
            if caches is not None:
                cache = caches.setdefault(tuple(idx), ResidualCache())
                cache.reuse = reuse
            out = self.dit_forward(
                latent[None].expand(b, *latent.shape).to(dit_dtype),
                t.reshape(1).expand(b),
                [contexts[i].to(dit_dtype) for i in idx],
                cond.clip_fea.to(dit_dtype),
                cond.y[None].to(dit_dtype),
                torch.stack([audios[i] for i in idx]).to(dit_dtype),
                masks,
                audio_scale=settings.audio_scale,
                residual_cache=cache,
            )
            for j, i in enumerate(idx):
                preds[names[i]] = out[j].float()
        return preds

    @torch.no_grad()
    def denoise(
        self,
        cond: WindowCondition,
        audio: Tensor,
        motion_latent: Tensor,
        noise: Tensor,
        settings: WindowSettings,
        ref_target_masks: Tensor | None = None,
        step_noise: Callable[[int], Tensor] | None = None,
        trace: StepTrace | None = None,
        keep: SourceKeep | None = None,
    ) -> Tensor:
        """Run the sampler for one window and return its final latent [16, T, h, w] (float32).

        audio: [H, F, 5, layers, width] windowed wav2vec2 features per speaker.
        motion_latent: [16, Tm, h, w], pasted clean over the first Tm latent frames before every
            DiT call and after every update (the reference's behaviour).
        noise: [16, T, h, w] initial noise.
        ref_target_masks: [H+1, h, w] speaker masks (needed for H >= 2).
        step_noise(i): fresh noise for step i when settings.update is "x0_renoise".
        keep: after every update, the kept region is reset to the source latent noised to the next
            timestep with the window's noise (inpainting-style blending, as ComfyUI users do V2V).
        """
        names = settings.guidance.branches()
        audio = audio.to(self.device)
        contexts, audios = self._branch_inputs(names, audio)
        masks = ref_target_masks.to(self.device) if ref_target_masks is not None else None
        timesteps = settings.timesteps().to(self.device)
        tm = motion_latent.shape[1]
        motion = motion_latent.to(self.device, torch.float32)
        latent = noise.to(self.device, torch.float32).clone()
        apg = APGGuidance() if settings.apg else None
        plan = self.teacache_plan(settings)
        caches: dict[tuple[int, ...], ResidualCache] | None = {} if not all(plan) else None
        if keep is not None:
            keep_latent = keep.latent.to(self.device, torch.float32)
            keep_mask = keep.mask.to(self.device, torch.float32)
            start_noise = latent.clone()
        for i in range(settings.steps):
            latent[:, :tm] = motion
            if trace is not None:
                trace("latent", i, latent)
            with maybe_stage(self.times, "dit_step" if plan[i] else "dit_step_cached"):
                preds = self._predict(latent, timesteps[i], cond, names, contexts, audios, masks, settings,
                                      caches, reuse=not plan[i])
            if trace is not None:
                for name, p in preds.items():
                    trace(f"pred_{name}", i, p)
            guided = apg.combine(preds, settings.guidance) if apg is not None else combine_guidance(preds, settings.guidance)
            if settings.update == EULER:
                latent = euler_step(latent, guided, timesteps[i], timesteps[i + 1])
            else:
                fresh = step_noise(i) if step_noise is not None and i + 1 < settings.steps else None
                latent = x0_renoise_step(latent, guided, timesteps[i], timesteps[i + 1], fresh)
            if keep is not None:
                sigma = timesteps[i + 1] / 1000.0
                source_t = (1.0 - sigma) * keep_latent + sigma * start_noise
                latent = keep_mask * source_t + (1.0 - keep_mask) * latent
            latent[:, :tm] = motion
        if trace is not None:
            trace("latent", settings.steps, latent)
        return latent

    # ------------------------------------------------------------------ decoding
    @torch.no_grad()
    def decode(self, latent: Tensor) -> Tensor:
        """latent [16, T, h, w] -> frames [3, 1 + 4(T-1), H, W] in [-1, 1]."""
        with maybe_stage(self.times, "vae_decode"):
            return self.vae.decode(latent[None].to(self.vae.dtype))[0]

    @torch.no_grad()
    def decode_stream(self, latent: Tensor) -> Iterator[Tensor]:
        """Like `decode`, yielding [3, n, H, W] chunks as each latent frame is decoded (1 then 4s)."""
        stream = self.vae.decode_stream(latent[None].to(self.vae.dtype))
        while True:
            with maybe_stage(self.times, "vae_decode"):
                chunk = next(stream, None)
            if chunk is None:
                return
            yield chunk[0]
