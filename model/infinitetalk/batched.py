"""Several windows at once: one DiT call per step for all of them (and all their guidance branches).

Sessions that share a GPU each make their own windows. When windows of the same shape are ready at
the same time, stacking them on the batch axis turns n DiT calls per step into one, which fills the
GPU better than n small calls. Each window keeps everything that is its own: condition (CLIP
features and `y`), audio, motion latent, noise, speaker masks, step noise and APG state. The result
for each window equals `InfiniteTalkPipeline.denoise` on that window alone up to the float rounding
of batched kernels; single windows never come here (they use `denoise`, unchanged).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from model.dit.teacache import ResidualCache
from model.sampling import EULER, APGGuidance, combine_guidance, euler_step, x0_renoise_step

from .pipeline import InfiniteTalkPipeline, SourceKeep, WindowCondition
from .settings import WindowSettings
from .timing import maybe_stage

log = logging.getLogger(__name__)


@dataclass
class DenoiseItem:
    """One window's inputs to `denoise_batch` (same meaning as `InfiniteTalkPipeline.denoise`'s).

    audio: [H, F, 5, layers, width]. motion_latent: [16, Tm, h, w]. noise: [16, T, h, w].
    ref_target_masks: [H+1, h, w] for H >= 2. step_noise(i): fresh noise for x0_renoise updates.
    keep: part of a source video to keep (see `SourceKeep`).
    """

    cond: WindowCondition
    audio: Tensor
    motion_latent: Tensor
    noise: Tensor
    ref_target_masks: Tensor | None = None
    step_noise: Callable[[int], Tensor] | None = None
    keep: SourceKeep | None = None


@dataclass
class _Call:
    """One DiT call per step: the (window, branch) elements it evaluates and their fixed inputs."""

    elements: list[tuple[int, str]]
    rows: Tensor  # [E] window index of each element
    contexts: list[Tensor]
    clip_fea: Tensor  # [E, tokens, clip_dim]
    y: Tensor  # [E, 20, T, h, w]
    audio: Tensor  # [E, H', F, 5, layers, width]
    masks: Tensor | None  # [E, H'+1, h, w] when H' >= 2


def check_batchable(items: Sequence[DenoiseItem]) -> None:
    """All windows of a batch must share latent shape and speaker count (settings are shared by design)."""
    first = items[0]
    for k, it in enumerate(items):
        if it.noise.shape != first.noise.shape:
            raise ValueError(f"window {k} has latent {list(it.noise.shape)}, window 0 {list(first.noise.shape)}: "
                             "only windows of the same size and length can be batched")
        if it.audio.shape != first.audio.shape:
            raise ValueError(f"window {k} has audio {list(it.audio.shape)}, window 0 {list(first.audio.shape)}: "
                             "only windows with the same speaker count and length can be batched")
        if (it.ref_target_masks is None) != (first.ref_target_masks is None):
            raise ValueError("either every window of a batch has speaker masks or none has")


def _plan_calls(pipe: InfiniteTalkPipeline, items: Sequence[DenoiseItem], names: tuple[str, ...],
                settings: WindowSettings) -> list[_Call]:
    dev, dtype = pipe.device, pipe.dit.dtype
    branch_inputs = [pipe._branch_inputs(names, it.audio.to(dev)) for it in items]
    groups: dict[int, list[tuple[int, int]]] = {}  # key -> [(window k, branch b)]
    for b in range(len(names)):
        speakers = branch_inputs[0][1][b].shape[0]
        key = speakers if settings.batch_branches else -1 - b
        groups.setdefault(key, []).extend((k, b) for k in range(len(items)))
    calls = []
    for members in groups.values():
        audios = torch.stack([branch_inputs[k][1][b] for k, b in members])
        masks = None
        if audios.shape[1] >= 2:
            masks = torch.stack([items[k].ref_target_masks for k, _ in members]).to(dev)
        calls.append(_Call(
            elements=[(k, names[b]) for k, b in members],
            rows=torch.tensor([k for k, _ in members], device=dev),
            contexts=[branch_inputs[k][0][b].to(dtype) for k, b in members],
            clip_fea=torch.cat([items[k].cond.clip_fea for k, _ in members]).to(dev, dtype),
            y=torch.stack([items[k].cond.y for k, _ in members]).to(dev, dtype),
            audio=audios.to(dtype),
            masks=masks,
        ))
    return calls


@torch.no_grad()
def denoise_batch(pipe: InfiniteTalkPipeline, items: Sequence[DenoiseItem], settings: WindowSettings) -> list[Tensor]:
    """Run the sampler for several windows together; returns each window's final latent [16, T, h, w].

    One DiT call per step and speaker-count group (with `batch_branches`; else per guidance branch),
    stacking windows x branches on the batch axis. Guidance and the sampler update run per window.
    """
    if not items:
        return []
    check_batchable(items)
    dev = pipe.device
    names = settings.guidance.branches()
    calls = _plan_calls(pipe, items, names, settings)
    timesteps = settings.timesteps().to(dev)
    motions = [it.motion_latent.to(dev, torch.float32) for it in items]
    latents = [it.noise.to(dev, torch.float32).clone() for it in items]
    apgs = [APGGuidance() if settings.apg else None for _ in items]
    keeps = [None if it.keep is None else (it.keep.latent.to(dev, torch.float32), it.keep.mask.to(dev, torch.float32),
                                           lat.clone()) for it, lat in zip(items, latents, strict=True)]
    dit_dtype = pipe.dit.dtype
    plan = pipe.teacache_plan(settings)  # TeaCache: one residual per call (its windows x branches)
    caches = [ResidualCache() for _ in calls] if not all(plan) else None
    for i in range(settings.steps):
        for lat, mot in zip(latents, motions, strict=True):
            lat[:, : mot.shape[1]] = mot
        x = torch.stack(latents).to(dit_dtype)
        preds: list[dict[str, Tensor]] = [{} for _ in items]
        with maybe_stage(pipe.times, "dit_step" if plan[i] else "dit_step_cached"):
            for c, call in enumerate(calls):
                e = len(call.elements)
                cache = None
                if caches is not None:
                    cache = caches[c]
                    cache.reuse = not plan[i]
                out = pipe.dit_forward(x.index_select(0, call.rows), timesteps[i].reshape(1).expand(e), call.contexts,
                                       call.clip_fea, call.y, call.audio, call.masks, audio_scale=settings.audio_scale,
                                       residual_cache=cache)
                for j, (k, name) in enumerate(call.elements):
                    preds[k][name] = out[j].float()
        for k, it in enumerate(items):
            apg = apgs[k]
            guided = apg.combine(preds[k], settings.guidance) if apg is not None else combine_guidance(preds[k], settings.guidance)
            if settings.update == EULER:
                lat = euler_step(latents[k], guided, timesteps[i], timesteps[i + 1])
            else:
                fresh = it.step_noise(i) if it.step_noise is not None and i + 1 < settings.steps else None
                lat = x0_renoise_step(latents[k], guided, timesteps[i], timesteps[i + 1], fresh)
            if (kp := keeps[k]) is not None:  # the kept region: the source, noised to the next timestep
                keep_latent, keep_mask, start_noise = kp
                sigma = timesteps[i + 1] / 1000.0
                lat = keep_mask * ((1.0 - sigma) * keep_latent + sigma * start_noise) + (1.0 - keep_mask) * lat
            lat[:, : motions[k].shape[1]] = motions[k]
            latents[k] = lat
    return latents


@torch.no_grad()
def encode_motion_batch(pipe: InfiniteTalkPipeline, pixels: Sequence[Tensor]) -> list[Tensor]:
    """Motion frames [3, M, H, W] of several windows -> clean latents; equal shapes share a VAE call."""
    out: list[Tensor | None] = [None] * len(pixels)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for k, p in enumerate(pixels):
        by_shape.setdefault(tuple(p.shape), []).append(k)
    for ks in by_shape.values():
        if len(ks) == 1:
            out[ks[0]] = pipe.encode_motion(pixels[ks[0]])
            continue
        with maybe_stage(pipe.times, "vae_encode_motion"):
            stacked = torch.stack([pixels[k] for k in ks]).to(pipe.device, pipe.vae.dtype)
            latents = pipe.vae.encode(stacked)
        for j, k in enumerate(ks):
            out[k] = latents[j]
    return out  # type: ignore[return-value]


@torch.no_grad()
def decode_stream_batch(pipe: InfiniteTalkPipeline, latents: Sequence[Tensor]):
    """Decode same-shaped latents together, yielding [B, 3, n, H, W] chunks as each latent frame is done."""
    stream = pipe.vae.decode_stream(torch.stack(list(latents)).to(pipe.vae.dtype))
    while True:
        with maybe_stage(pipe.times, "vae_decode"):
            chunk = next(stream, None)
        if chunk is None:
            return
        yield chunk
