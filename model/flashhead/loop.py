"""FlashHead's chunk loop (reference `FlashHeadPipeline.generate`), one chunk at a time.

A chunk is a `frame_num`-frame window (33). Its latent starts as noise; before every DiT call (and
once after the last update) the first latent frames are overwritten by the clean motion latents (the
reference latent's first frame for chunk 0; the re-encoded last frames of the previous chunk after
that). Sampling is FlashTalk's: 4 distilled steps through shift 5, no guidance, x0 = x - t*v then
re-noised to the next timestep with a fresh draw (`model.sampling.x0_renoise_step`). The reference
draws that noise at every step, the last one too (multiplied by 0 there), so a chunk consumes
1 + steps draws of the latent's shape from one generator; `draw_chunk_noise` keeps that order, so a
seeded CPU generator gives the reference's draws.

After sampling: decode, colour-correct against the reference image (FlashHead's own Lab match), and
re-encode the last `motion_frames` decoded frames as the next chunk's motion latents.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from model.dit.flashhead import FlashHeadDiT
from model.infinitetalk.timing import StageTimes, maybe_stage
from model.sampling import FLASHTALK_4STEP, X0_RENOISE, SamplerPreset, x0_renoise_step

from .colour import match_colours_flashhead

logger = logging.getLogger(__name__)

POSTERIOR_SEED_OFFSET = 1_000_003
"""A stream's posterior draws (LTX VAE encodes) come from a generator seeded seed + this."""

StepTrace = Callable[[str, int, Tensor], None]
"""Observer of a chunk's sampling: ("step", k, DiT input latent), ("flow", k, DiT output), ("final", steps, latent)."""


class ChunkVAE(Protocol):
    """The VAE as the loop uses it, unbatched: pixels [3, F, H, W] in [-1, 1] <-> latents [C, T, h, w].
    `generator`: the stream's posterior draws, for a VAE whose encode samples (Lite's LTX VAE); others ignore it."""

    def encode(self, video: Tensor, generator: torch.Generator | None = None) -> Tensor: ...

    def decode(self, latent: Tensor) -> Tensor: ...

    def frames_for_latents(self, latents: int) -> int:
        """Pixel frames that encode to `latents` latent frames (1 + stride*(n-1) for a causal VAE)."""
        ...


@dataclass(frozen=True)
class ChunkSettings:
    """frame_num: frames per chunk (33). motion_latents: latent frames carried to the next chunk (2).
    sampler: FlashTalk's 4-step x0-renoise preset (no guidance). colour_strength: Lab match (1.0)."""

    frame_num: int = 33
    motion_latents: int = 2
    sampler: SamplerPreset = field(default=FLASHTALK_4STEP)
    colour_strength: float = 1.0

    def __post_init__(self) -> None:
        if self.sampler.update != X0_RENOISE or self.sampler.guidance.calls_per_step != 1:
            raise ValueError(f"FlashHead samples with x0-renoise and no guidance; {self.sampler.name} is not that")
        if self.motion_latents < 1:
            raise ValueError(f"motion_latents must be >= 1, got {self.motion_latents}")
        if not 0.0 <= self.colour_strength <= 1.0:
            raise ValueError(f"colour_strength must be in [0, 1], got {self.colour_strength}")


@dataclass(frozen=True)
class ChunkNoise:
    """A chunk's random draws: the initial latent noise and one re-noise draw per step."""

    init: Tensor
    steps: tuple[Tensor, ...]


def draw_chunk_noise(generator: torch.Generator, shape: tuple[int, ...], steps: int) -> ChunkNoise:
    """Draw in the reference's order (initial noise, then one per step) as float32 on the generator's device."""
    def draw() -> Tensor:
        return torch.randn(shape, generator=generator, dtype=torch.float32, device=generator.device)

    init = draw()
    return ChunkNoise(init, tuple(draw() for _ in range(steps)))


@dataclass(frozen=True)
class ChunkInputs:
    """What one chunk's sampling needs: ref_latent [C, T, h, w] (`y`), audio [F, window, layers, width],
    motion [C, Tm, h, w] (pasted over the first Tm latent frames) and its draws."""

    ref_latent: Tensor
    audio: Tensor
    motion: Tensor
    noise: ChunkNoise


@torch.no_grad()
def denoise_batch(
    dit: FlashHeadDiT,
    chunks: Sequence[ChunkInputs],
    timesteps: Tensor,
    trace: StepTrace | None = None,
    times: StageTimes | None = None,
) -> list[Tensor]:
    """Sample chunks of several streams together (one DiT call per step for all); each result equals its
    chunk sampled alone. Returns the final latents [C, T, h, w] float32, motion latents written back.

    timesteps: float32 [steps + 1] on the [0, 1000] scale, ending in 0. trace: one chunk only.
    times: "dit_step" per DiT call.
    """
    device, dtype = dit.device, dit.dtype
    steps = timesteps.numel() - 1
    if any(len(c.noise.steps) != steps for c in chunks):
        raise ValueError(f"{steps} steps need {steps} re-noise draws per chunk")
    if trace is not None and len(chunks) != 1:
        raise ValueError("trace observes one chunk; sample it alone")
    motions = [c.motion.to(device, torch.float32) for c in chunks]
    latent = torch.stack([c.noise.init.to(device, torch.float32) for c in chunks])
    fresh = [torch.stack([c.noise.steps[k] for c in chunks]).to(device, torch.float32) for k in range(steps)]
    y = torch.stack([c.ref_latent for c in chunks]).to(device, dtype)
    audio = torch.stack([c.audio for c in chunks]).to(device, dtype)
    timesteps = timesteps.to(device)

    def paste() -> None:
        for b, m in enumerate(motions):
            latent[b, :, : m.shape[1]] = m

    for k in range(steps):
        paste()
        if trace is not None:
            trace("step", k, latent[0])
        with maybe_stage(times, "dit_step"):
            flow = dit(latent.to(dtype), timesteps[k].reshape(1), audio, y).float()
        if trace is not None:
            trace("flow", k, flow[0])
        latent = x0_renoise_step(latent, flow, timesteps[k], timesteps[k + 1], fresh[k])
    paste()
    if trace is not None:
        trace("final", steps, latent[0])
    return list(latent.unbind(0))


def denoise_chunk(
    dit: FlashHeadDiT, ref_latent: Tensor, audio: Tensor, motion: Tensor, noise: ChunkNoise, timesteps: Tensor,
    trace: StepTrace | None = None, times: StageTimes | None = None,
) -> Tensor:
    """One chunk alone (`denoise_batch` of one): its final latent [C, T, h, w] float32."""
    return denoise_batch(dit, [ChunkInputs(ref_latent, audio, motion, noise)], timesteps, trace, times)[0]


def encode_reference(vae: ChunkVAE, ref_image: Tensor, frame_num: int, generator: torch.Generator | None = None) -> Tensor:
    """The DiT's `y`: the reference image [3, H, W] repeated over a chunk and encoded -> [C, T, h, w]."""
    return vae.encode(ref_image.float()[:, None].expand(-1, frame_num, -1, -1).contiguous(), generator).float()


class FlashHeadChunker:
    """One stream's chunk loop state: reference latent, colour reference, motion latents, generator.

    ref_image: [3, H, W] in [-1, 1]; ref_latent: its `encode_reference` (computed when None). Each
    `chunk(audio)` returns all `frame_num` frames [3, F, H, W] in [-1, 1]; the first `motion_frames` of
    every chunk repeat frames already shown, and a streaming caller drops them (the reference's stream
    mode does, for chunk 0 too). Several streams sample together with `inputs`, `denoise_batch`, `finish`.
    """

    def __init__(
        self, dit: FlashHeadDiT, vae: ChunkVAE, ref_image: Tensor, settings: ChunkSettings, seed: int,
        ref_latent: Tensor | None = None, generator_device: str | torch.device = "cpu",
    ) -> None:
        self.dit, self.vae, self.settings = dit, vae, settings
        self.ref_image = ref_image.float()
        # The LTX VAE's encode samples its posterior; the reference draws that from torch's global generator,
        # apart from the sampling noise. Here each stream has its own, so the sampling draws stay the reference's.
        self.posterior_generator = torch.Generator(device=generator_device).manual_seed(seed + POSTERIOR_SEED_OFFSET)
        if ref_latent is None:
            ref_latent = encode_reference(vae, self.ref_image, settings.frame_num, self.posterior_generator)
        self.ref_latent = ref_latent.float()
        if self.ref_latent.shape[1] <= settings.motion_latents:
            raise ValueError(f"a chunk of {self.ref_latent.shape[1]} latent frames cannot carry {settings.motion_latents}")
        self.motion = self.ref_latent[:, :1].clone()
        self.motion_frames = vae.frames_for_latents(settings.motion_latents)
        self.generator = torch.Generator(device=generator_device).manual_seed(seed)
        self.timesteps = settings.sampler.timesteps()
        self.times: StageTimes | None = None  # set to collect per-stage seconds (bench)

    def inputs(self, audio: Tensor, noise: ChunkNoise | None = None) -> ChunkInputs:
        """The next chunk's sampling inputs (its draws taken from this stream's generator unless given)."""
        if noise is None:
            noise = draw_chunk_noise(self.generator, tuple(self.ref_latent.shape), self.settings.sampler.steps)
        return ChunkInputs(self.ref_latent, audio, self.motion, noise)

    def finish(self, latent: Tensor) -> Tensor:
        """A sampled chunk's latent -> frames [3, frame_num, H, W]: decode, colour match, next motion latents."""
        with maybe_stage(self.times, "vae_decode"):
            video = self.vae.decode(latent).float()
        if self.settings.colour_strength > 0:
            with maybe_stage(self.times, "colour"):
                video = match_colours_flashhead(video, self.ref_image, self.settings.colour_strength)
        with maybe_stage(self.times, "vae_encode"):
            self.motion = self.vae.encode(video[:, -self.motion_frames:], self.posterior_generator).float()
        return video

    def chunk(self, audio: Tensor, noise: ChunkNoise | None = None, trace: StepTrace | None = None) -> Tensor:
        """audio: [frame_num, window, layers, width] -> frames [3, frame_num, H, W] in [-1, 1]."""
        latent = denoise_batch(self.dit, [self.inputs(audio, noise)], self.timesteps, trace, self.times)[0]
        return self.finish(latent)
