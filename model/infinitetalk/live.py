"""Endless InfiniteTalk for live use: one window per call, frames yielded as the VAE decodes them.

A live window covers output frames [first - M, first + N) where M = motion frames and N = new frames
(F = M + N): its first M frames re-generate the previous window's last M frames (they are not
shown again) and its last N frames are new. The first window conditions on the source frame itself
(one-frame motion latent, as the reference's first window does) and also drops its first M frames,
which stand for the audio just before the session began. Everything else (noise from one seeded
generator, clean motion paste, guidance, Euler steps, colour matching against the first source frame,
the next window's motion frames = the last M colour-corrected frames) is the reference's loop.

The colour match uses per-frame statistics, so it is applied to each decoded chunk as it arrives.

Latency: `prepare(state, first_frame)` does the next window's work that needs no audio (its noise
draws, its condition frame's CLIP + VAE encoding, the VAE encoding of the motion frames and, for a
regeneration mask, of the source frames to keep) ahead of time, e.g. while the engine waits for
that window's speech; `window()` then starts straight at the DiT steps. Results are bit-identical
with or without it. Frames are handed to the host one chunk behind the decoder (`FrameHandoff`), so
on a GPU the next chunk decodes while the consumer takes the previous one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from model.colour import match_colours
from model.sampling import X0_RENOISE

from .handoff import FrameHandoff, PendingFrames
from .long_video import draw_window_noise, u8_to_unit
from .pipeline import InfiniteTalkPipeline, SourceKeep, WindowCondition
from .settings import WindowSettings
from .timing import maybe_stage

log = logging.getLogger(__name__)


@dataclass
class LiveSource:
    """The avatar at generation size: uint8 [N, H, W, 3] (N = 1 for a still image).

    fps: the source video's frame rate (a video loops at its own speed whatever the output rate).
    speaker_masks: [S+1, H/8, W/8] masks for S >= 2 speakers (speakers then background), else None.
    regen_mask: [H, W] in [0, 1], 1 where the model regenerates (e.g. the head) and 0 where the source
        video is kept; None regenerates everything (the reference's behaviour).
    """

    frames: Tensor
    fps: float = 25.0
    speaker_masks: Tensor | None = None
    regen_mask: Tensor | None = None

    def index_at(self, output_frame: int, output_fps: float) -> int:
        """Source frame shown at an output frame: a still image is frame 0; a video loops."""
        n = self.frames.shape[0]
        if n == 1:
            return 0
        return int(max(0, output_frame) * self.fps / output_fps) % n


@dataclass
class PreparedWindow:
    """The next window's audio-free inputs, made ahead by `LiveWindowRunner.prepare`.

    noise: the next window's initial noise (the generator's next draws, whatever its first frame).
    motion_latent: the VAE encoding of `motion_from` (valid while state.motion_pixels is that tensor).
    keep / source_px: the kept source region's latent and pixels for the window at `keep_first`.
    """

    noise: Tensor
    motion_from: Tensor | None = None
    motion_latent: Tensor | None = None
    keep_first: int | None = None
    keep: SourceKeep | None = None
    source_px: Tensor | None = None


@dataclass
class LiveState:
    source: LiveSource
    colour_ref: Tensor | None
    motion_pixels: Tensor  # [3, Mp, H, W] in [-1, 1]
    generator: torch.Generator
    windows: int = 0
    conditions: dict[int, WindowCondition] = field(default_factory=dict)
    keep_latent_mask: Tensor | None = None  # [1, 1, h, w], 1 = keep the source
    regen_pixel_mask: Tensor | None = None  # [1, 1, H, W] feathered, 1 = generated pixels
    prepared: PreparedWindow | None = None


def region_masks(regen: Tensor, stride: int, feather_px: float = 6.0) -> tuple[Tensor, Tensor]:
    """[H, W] regenerate-mask -> (keep mask at latent size [1, 1, h, w], feathered pixel mask [1, 1, H, W])."""
    m = regen.float().clamp(0, 1)[None, None]
    regen_lat = torch.nn.functional.avg_pool2d(m, stride)
    keep_lat = (1.0 - (regen_lat > 0).float())  # any generated pixel in a latent cell -> generate it
    radius = max(1, int(3 * feather_px))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(x**2) / (2 * feather_px**2))
    k = k / k.sum()
    blurred = torch.nn.functional.conv2d(torch.nn.functional.pad(m, (radius,) * 4, mode="replicate"), k.view(1, 1, 1, -1))
    blurred = torch.nn.functional.conv2d(blurred, k.view(1, 1, -1, 1))
    # Inside the regenerated region stay fully generated; feather outwards only, and cut the Gaussian's
    # far tail so the source is kept exactly beyond the feather.
    feather = ((blurred - 0.02) / 0.98).clamp(0, 1)
    return keep_lat, torch.maximum(feather, m)


class LiveWindowRunner:
    """Makes consecutive windows for one or more sessions (state is per session)."""

    def __init__(self, pipe: InfiniteTalkPipeline, settings: WindowSettings, output_fps: float = 25.0,
                 max_cached_conditions: int = 8) -> None:
        self.pipe = pipe
        self.settings = settings
        self.output_fps = output_fps
        self.max_cached_conditions = max_cached_conditions
        self.handoff = FrameHandoff(pipe.device)

    def start(self, source: LiveSource, seed: int) -> LiveState:
        """New session state: motion = the first source frame, noise generator seeded once."""
        h, w = source.frames.shape[1:3]
        stride = 2 * self.pipe.vae_stride
        if h % stride or w % stride:
            raise ValueError(f"source frames are {h}x{w}; generation needs multiples of {stride}")
        first = u8_to_unit(source.frames[0])[:, None]  # [3, 1, H, W]
        colour_ref = first if self.settings.colour_strength > 0 else None
        state = LiveState(source, colour_ref, first.clone(), torch.Generator().manual_seed(seed))
        if source.regen_mask is not None:
            state.keep_latent_mask, state.regen_pixel_mask = region_masks(source.regen_mask, self.pipe.vae_stride)
        return state

    def _condition(self, state: LiveState, index: int) -> WindowCondition:
        cond = state.conditions.get(index)
        if cond is None:
            cond = self.pipe.condition(u8_to_unit(state.source.frames[index])[:, None], self.settings.frame_num)
            if len(state.conditions) >= self.max_cached_conditions:
                state.conditions.pop(next(iter(state.conditions)))
            state.conditions[index] = cond
        return cond

    def _latent_hw(self, state: LiveState) -> tuple[int, int]:
        h, w = (d // self.pipe.vae_stride for d in state.source.frames.shape[1:3])
        return h, w

    def _source_keep(self, state: LiveState, first_frame: int) -> tuple[SourceKeep, Tensor]:
        """The source frames of the window and their latent, for the kept (not regenerated) region."""
        M, F = self.settings.motion_frames, self.settings.frame_num
        idx = [state.source.index_at(f, self.output_fps) for f in range(first_frame - M, first_frame - M + F)]
        source_px = u8_to_unit(state.source.frames[idx])  # [3, F, H, W]
        return SourceKeep(self.pipe.encode_motion(source_px), state.keep_latent_mask), source_px

    def prepare(self, state: LiveState, first_frame: int) -> None:
        """Make the window starting at `first_frame` ready except for its audio (idempotent).

        Draws its noise, encodes its condition frame (cached per source frame), its motion frames
        and (with a regeneration mask) its kept source frames. Call it when the previous window has
        finished and its speech is not in yet.
        """
        s = self.settings
        if state.prepared is None:
            noise = draw_window_noise(state.generator, s, self._latent_hw(state), first=state.windows == 0)
            state.prepared = PreparedWindow(noise)
        self._condition(state, state.source.index_at(first_frame - s.motion_frames, self.output_fps))
        prep = state.prepared
        if prep.motion_from is not state.motion_pixels:
            prep.motion_latent = self.pipe.encode_motion(state.motion_pixels)
            prep.motion_from = state.motion_pixels
        if state.keep_latent_mask is not None and prep.keep_first != first_frame:
            prep.keep, prep.source_px = self._source_keep(state, first_frame)
            prep.keep_first = first_frame

    def window(self, state: LiveState, audio: Tensor, first_frame: int) -> Iterator[np.ndarray]:
        """Generate the window whose new frames start at output frame `first_frame`.

        audio: [S, F, 5, layers, width] windowed speech features for the window's F frames
        (output frames first_frame - M .. first_frame + N - 1). Yields N uint8 frames [H, W, 3].
        """
        s = self.settings
        M, F = s.motion_frames, s.frame_num
        if audio.shape[1] != F:
            raise ValueError(f"audio covers {audio.shape[1]} frames; a window needs {F} (motion {M} + new {F - M})")
        prep, state.prepared = state.prepared, None
        if prep is not None:
            noise = prep.noise
        else:
            noise = draw_window_noise(state.generator, s, self._latent_hw(state), first=state.windows == 0)
        step_noise = None
        if s.update == X0_RENOISE:
            gen, shape = state.generator, tuple(noise.shape)

            def step_noise(i: int) -> Tensor:
                return torch.randn(shape, generator=gen)

        cond = self._condition(state, state.source.index_at(first_frame - M, self.output_fps))
        if prep is not None and prep.motion_from is state.motion_pixels:
            motion_latent = prep.motion_latent
        else:
            motion_latent = self.pipe.encode_motion(state.motion_pixels)
        keep, source_px = None, None
        if state.keep_latent_mask is not None:
            if prep is not None and prep.keep_first == first_frame:
                keep, source_px = prep.keep, prep.source_px
            else:
                keep, source_px = self._source_keep(state, first_frame)
        latent = self.pipe.denoise(cond, audio, motion_latent, noise, s, state.source.speaker_masks, step_noise,
                                   keep=keep)
        state.windows += 1
        produced = 0
        recent: Tensor | None = None
        # (frames on their way to the host, motion frames to publish once they are shown)
        pending: tuple[PendingFrames | None, Tensor | None] | None = None
        for chunk in self.pipe.decode_stream(latent):
            chunk = chunk.float()
            if state.colour_ref is not None:
                with maybe_stage(self.pipe.times, "colour_match"):
                    chunk = match_colours(chunk, state.colour_ref, s.colour_strength)
            if source_px is not None and state.regen_pixel_mask is not None:
                m = state.regen_pixel_mask[0].to(chunk)
                src = source_px[:, produced : produced + chunk.shape[1]].to(chunk)
                chunk = m * chunk + (1.0 - m) * src
            recent = chunk if recent is None else torch.cat([recent, chunk], dim=1)[:, -M:]
            start = max(0, M - produced)
            produced += chunk.shape[1]
            shown = self.handoff.submit(chunk[:, start:]) if start < chunk.shape[1] else None
            motion = recent[:, -M:].clone() if produced >= M else None
            if pending is not None:  # the previous chunk, while this one is on its way
                yield from self._publish(state, *pending)
            pending = (shown, motion)
        if pending is not None:
            yield from self._publish(state, *pending)

    @staticmethod
    def _publish(state: LiveState, shown: PendingFrames | None, motion: Tensor | None) -> Iterator[np.ndarray]:
        # Keep the motion frames current as frames are shown, so a window cut short by an
        # interrupt still continues from what was last produced.
        if motion is not None:
            state.motion_pixels = motion
        if shown is not None:
            yield from shown.frames()
