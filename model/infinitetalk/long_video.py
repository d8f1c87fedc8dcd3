"""The reference's long-video loop ("streaming" mode of `generate_infinitetalk`), window by window.

Each window of F frames is conditioned on a source frame (the still image, or the source video
frame at the window's audio position) and on the last M frames of the previous window; the first
window uses the source frame itself as a one-frame motion latent and keeps all F frames, later
windows drop their first M frames (they re-generate the motion frames). Audio rows are taken with
clamped neighbour offsets -2..+2 and mirror-padded once near the end. Noise comes from ONE torch
generator seeded once; each window after the first also makes S+1 motion-shaped draws that the
reference uses for a re-noising that is immediately overwritten (kept here for the RNG position).

This module is the reference's algorithm (see the golden loop README), used for parity tests and
for reference-faithful offline renders; the live backend uses the same per-window operations.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from model.colour import match_colours
from model.sampling import X0_RENOISE

from .pipeline import InfiniteTalkPipeline, StepTrace
from .settings import WindowSettings

log = logging.getLogger(__name__)

AUDIO_OFFSETS = (-2, -1, 0, 1, 2)


def audio_rows(start: int, frames: int, total_rows: int) -> Tensor:
    """Row indices [frames, 5] of the windowed audio for frames start .. start+frames-1."""
    f = torch.arange(start, start + frames).unsqueeze(1) + torch.tensor(AUDIO_OFFSETS)
    return f.clamp(0, total_rows - 1)


def mirror_pad(audio: Tensor, rows: int) -> Tensor:
    """Append the last `rows` rows in reverse order (the reference's end-of-audio padding)."""
    return torch.cat([audio, audio[-rows:].flip(0)], dim=0) if rows > 0 else audio


def u8_to_unit(frames_u8: Tensor) -> Tensor:
    """[..., H, W, 3] uint8 -> [3, ..., H, W] float32 in [-1, 1], as the reference scales frames."""
    x = (frames_u8.float() / 255.0 - 0.5) * 2.0
    return x.movedim(-1, 0)


@dataclass
class WindowRecord:
    """What one window did (for tests and progress reporting)."""

    index: int
    audio_start: int
    cond_frame: int
    rows: Tensor
    motion_pixels: Tensor
    noise: Tensor
    decoded: Tensor
    decoded_cc: Tensor
    kept: range
    extras: dict = field(default_factory=dict)


def draw_window_noise(generator: torch.Generator, settings: WindowSettings, latent_hw: tuple[int, int],
                      first: bool, channels: int = 16) -> Tensor:
    """The window's noise, then (windows >= 1) the S+1 motion-shaped draws the reference makes."""
    h, w = latent_hw
    noise = torch.randn(channels, settings.latent_frames, h, w, generator=generator, dtype=torch.float32)
    if not first:
        for _ in range(settings.steps + 1):
            torch.randn(channels, settings.motion_latent_frames, h, w, generator=generator, dtype=torch.float32)
    return noise


def draw_step_noise(generator: torch.Generator, shape: tuple[int, ...], steps: int,
                    device: torch.device) -> Callable[[int], Tensor]:
    """The x0-renoise sampler's fresh noise for steps 0 .. steps-2, drawn now (in the order the reference
    draws them, right after the window noise) and moved to `device` in one copy, so no step waits for it.

    Returns step_noise(i) -> [*shape] on `device`.
    """
    draws = [torch.randn(shape, generator=generator, dtype=torch.float32) for _ in range(steps - 1)]
    stacked = torch.stack(draws).to(device) if draws else torch.empty(0, *shape, device=device)
    return stacked.__getitem__


def generate_long_video(
    pipe: InfiniteTalkPipeline,
    source: Tensor,
    audio_emb: Tensor,
    settings: WindowSettings,
    *,
    seed: int,
    max_frames: int = 1000,
    ref_target_masks: Tensor | None = None,
    noise_override: Callable[[int], Tensor | None] | None = None,
    on_window: Callable[[WindowRecord], None] | None = None,
    trace: Callable[[int], StepTrace | None] | None = None,
) -> Tensor:
    """Generate a video for the whole audio, as the reference's streaming mode does.

    source: uint8 [H, W, 3] (still image) or [N, H, W, 3] (video), already at the target size.
    audio_emb: [L, layers, width] (one speaker) or [S, L, layers, width] per-frame wav2vec2 features.
    noise_override(k): a tensor replaces window k's initial noise (the RNG draws still happen).
    Returns [3, N_out, H, W] in [-1, 1].
    """
    if audio_emb.dim() == 3:
        audio_emb = audio_emb[None]
    F, M = settings.frame_num, settings.motion_frames
    original_len = audio_emb.shape[1]
    if original_len <= F:
        raise ValueError(f"audio gives {original_len} frames; the long-video loop needs more than {F}")
    video = source if source.dim() == 4 else source[None]
    n_src = video.shape[0]
    h, w = video.shape[1] // pipe.vae_stride, video.shape[2] // pipe.vae_stride
    generator = torch.Generator().manual_seed(seed)
    colour_ref = u8_to_unit(video[0])[:, None].to(pipe.device) if settings.colour_strength > 0 else None

    start, k, first, last, padded = 0, 0, True, False, 0
    cond_frame = 0
    motion_pixels = u8_to_unit(video[0])[:, None]  # [3, 1, H, W]
    kept_frames: list[Tensor] = []
    audio = audio_emb
    while True:
        rows = audio_rows(start, F, audio.shape[1])
        window_audio = audio[:, rows]  # [S, F, 5, layers, width]
        noise = draw_window_noise(generator, settings, (h, w), first)
        if noise_override is not None and (forced := noise_override(k)) is not None:
            noise = forced
        step_noise = None
        if settings.update == X0_RENOISE:
            step_noise = draw_step_noise(generator, tuple(noise.shape), settings.steps, pipe.device)
        cond_image = u8_to_unit(video[cond_frame])[:, None]
        cond = pipe.condition(cond_image, F)
        motion_latent = pipe.encode_motion(motion_pixels)
        latent = pipe.denoise(cond, window_audio, motion_latent, noise, settings, ref_target_masks,
                              step_noise, trace(k) if trace is not None else None)
        decoded = pipe.decode(latent).float()
        corrected = decoded if colour_ref is None else match_colours(decoded, colour_ref, settings.colour_strength)
        kept = range(0, F) if first else range(M, F)
        kept_frames.append(corrected[:, kept.start : kept.stop])
        if on_window is not None:
            on_window(WindowRecord(k, start, cond_frame, rows, motion_pixels, noise, decoded, corrected, kept))
        if last or max_frames <= F:
            break
        motion_pixels = corrected[:, -M:]
        start += F - M
        end = start + F
        cond_frame = min(start, n_src - 1)
        if end >= min(max_frames, audio.shape[1]):
            last = True
            if end >= audio.shape[1]:
                padded = end - audio.shape[1] + 3
                audio = torch.cat([mirror_pad(a, padded)[None] for a in audio])
        first = False
        k += 1
    out = torch.cat(kept_frames, dim=1)[:, :max_frames]
    if max_frames > F and padded > 0:
        out = out[:, :original_len]
    return out
