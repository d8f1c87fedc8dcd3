"""Endless InfiniteTalk for live use: one window per call, frames yielded as the VAE decodes them.

A live window covers output frames [first - M, first + N) where M = motion frames and N = new frames
(F = M + N): its first M frames re-generate the previous window's last M frames (they are not
shown again) and its last N frames are new. The first window conditions on the source frame itself
(one-frame motion latent, as the reference's first window does) and also drops its first M frames,
which stand for the audio just before the session began. Everything else (noise from one seeded
generator, clean motion paste, guidance, Euler steps, colour matching against the first source frame,
the next window's motion frames = the last M colour-corrected frames) is the reference's loop.

The colour match uses per-frame statistics, so it is applied to each decoded chunk as it arrives.

Latency: `prepare_ahead(state, first_frame)` does the next window's work that needs neither its audio
nor its noise (the condition frame's CLIP + VAE encoding, the VAE encoding of the motion frames and,
with a regeneration mask, of the source frames to keep) ahead of time, e.g. while the engine waits for
that window's speech; the window then starts at its DiT steps. Results are bit-identical with or
without it. Frames are handed to the host one decoded chunk behind the decoder (`FrameHandoff`), so
on a GPU the next chunk decodes while the consumer takes the previous one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from model.colour import match_colours
from model.sampling import X0_RENOISE
from model.timebase import VIDEO_FPS

from .batched import DenoiseItem, decode_stream_batch, denoise_batch, encode_motion_batch
from .handoff import FrameHandoff, PendingFrames
from .long_video import draw_step_noise, draw_window_noise, u8_to_unit
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
    fps: float = float(VIDEO_FPS)
    speaker_masks: Tensor | None = None
    regen_mask: Tensor | None = None

    def index_at(self, output_frame: int, output_fps: float) -> int:
        """Source frame shown at an output frame: a still image is frame 0; a video loops."""
        n = self.frames.shape[0]
        if n == 1:
            return 0
        return int(max(0, output_frame) * self.fps / output_fps) % n


@dataclass
class Precomputed:
    """A window's audio-free encodings, made ahead by `LiveWindowRunner.prepare_ahead`.

    motion_latent: the VAE encoding of `motion_from` (valid while state.motion_pixels is that tensor).
    keep / source_px: the kept source region's latent and pixels of the window at `keep_first`, made
    from `keep_source` (valid while state.source is that object).
    """

    motion_from: Tensor | None = None
    motion_latent: Tensor | None = None
    keep_first: int | None = None
    keep_source: LiveSource | None = None
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
    precomputed: Precomputed | None = None


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


@dataclass
class WindowWork:
    """A prepared window (see `LiveWindowRunner.prepare`): inputs drawn, not yet denoised."""

    state: LiveState
    settings: WindowSettings
    audio: Tensor  # [S, F, 5, layers, width]
    noise: Tensor  # [16, T, h, w]
    cond: WindowCondition
    step_noise: Callable[[int], Tensor] | None = None
    keep: SourceKeep | None = None  # keep part of a source video (regen_mask)
    source_px: Tensor | None = None  # [3, F, H, W] the window's source frames when `keep` is set
    motion_latent: Tensor | None = None  # encoded ahead (prepare_ahead), if still valid
    produced: int = 0
    recent: Tensor | None = None


class LiveWindowRunner:
    """Makes consecutive windows for one or more sessions (state is per session)."""

    def __init__(self, pipe: InfiniteTalkPipeline, settings: WindowSettings, output_fps: float = float(VIDEO_FPS),
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
        # The colour reference lives where the frames are decoded (every chunk is matched against it).
        colour_ref = first.to(self.pipe.device) if self.settings.colour_strength > 0 else None
        state = LiveState(source, colour_ref, first.clone(), torch.Generator().manual_seed(seed))
        if source.regen_mask is not None:
            state.keep_latent_mask, state.regen_pixel_mask = region_masks(source.regen_mask, self.pipe.vae_stride)
        return state

    def switch_source(self, state: LiveState, source: LiveSource) -> None:
        """Continue the session at another generation size (at a window boundary): the source, colour
        reference and conditions are replaced, and the motion frames are resized (area/bilinear) so the
        next window still continues from the last frames shown."""
        h, w = source.frames.shape[1:3]
        stride = 2 * self.pipe.vae_stride
        if h % stride or w % stride:
            raise ValueError(f"source frames are {h}x{w}; generation needs multiples of {stride}")
        motion = state.motion_pixels.transpose(0, 1)  # [M, 3, H, W]
        state.motion_pixels = torch.nn.functional.interpolate(
            motion, size=(h, w), mode="bilinear", antialias=True, align_corners=False
        ).clamp(-1, 1).transpose(0, 1).contiguous()
        state.source = source
        if state.colour_ref is not None:
            state.colour_ref = u8_to_unit(source.frames[0])[:, None].to(self.pipe.device)
        state.keep_latent_mask = state.regen_pixel_mask = None
        if source.regen_mask is not None:
            state.keep_latent_mask, state.regen_pixel_mask = region_masks(source.regen_mask, self.pipe.vae_stride)
        state.conditions.clear()

    def _condition(self, state: LiveState, index: int) -> WindowCondition:
        cond = state.conditions.get(index)
        if cond is None:
            cond = self.pipe.condition(u8_to_unit(state.source.frames[index])[:, None], self.settings.frame_num)
            if len(state.conditions) >= self.max_cached_conditions:
                state.conditions.pop(next(iter(state.conditions)))
            state.conditions[index] = cond
        return cond

    def _source_keep(self, state: LiveState, first_frame: int) -> tuple[SourceKeep, Tensor]:
        """The window's source frames and their latent, for the kept (not regenerated) region."""
        M, F = self.settings.motion_frames, self.settings.frame_num
        idx = [state.source.index_at(f, self.output_fps) for f in range(first_frame - M, first_frame - M + F)]
        source_px = u8_to_unit(state.source.frames[idx])  # [3, F, H, W]
        return SourceKeep(self.pipe.encode_motion(source_px), state.keep_latent_mask), source_px

    def prepare_ahead(self, state: LiveState, first_frame: int) -> None:
        """Encode what the window starting at `first_frame` needs besides its audio and noise.

        Its condition frame (cached per source frame), its motion frames (the last frames shown)
        and, with a regeneration mask, its kept source frames. Idempotent; call it when the previous
        window has finished and this window's speech is not in yet. Draws no random numbers.
        """
        self._condition(state, state.source.index_at(first_frame - self.settings.motion_frames, self.output_fps))
        pre = state.precomputed = state.precomputed or Precomputed()
        if pre.motion_from is not state.motion_pixels:
            pre.motion_latent = self.pipe.encode_motion(state.motion_pixels)
            pre.motion_from = state.motion_pixels
        if state.keep_latent_mask is not None and (pre.keep_first, pre.keep_source) != (first_frame, state.source):
            pre.keep, pre.source_px = self._source_keep(state, first_frame)
            pre.keep_first, pre.keep_source = first_frame, state.source

    def prepare(self, state: LiveState, audio: Tensor, first_frame: int,
                settings: WindowSettings | None = None) -> WindowWork:
        """Everything a window needs before denoising: its noise (drawn from the session's generator),
        its condition and settings. `settings` overrides the runner's for this window (e.g. fewer steps)."""
        s = settings or self.settings
        M, F = s.motion_frames, s.frame_num
        if (M, F) != (self.settings.motion_frames, self.settings.frame_num):
            raise ValueError("a window may change its steps or guidance, not its frame or motion-frame count")
        if audio.shape[1] != F:
            raise ValueError(f"audio covers {audio.shape[1]} frames; a window needs {F} (motion {M} + new {F - M})")
        h, w = (d // self.pipe.vae_stride for d in state.source.frames.shape[1:3])
        noise = draw_window_noise(state.generator, s, (h, w), first=state.windows == 0)
        step_noise = None
        if s.update == X0_RENOISE:
            step_noise = draw_step_noise(state.generator, tuple(noise.shape), s.steps, self.pipe.device)

        cond = self._condition(state, state.source.index_at(first_frame - M, self.output_fps))
        pre, state.precomputed = state.precomputed, None
        keep, source_px = None, None
        if state.keep_latent_mask is not None:
            if pre is not None and (pre.keep_first, pre.keep_source) == (first_frame, state.source):
                keep, source_px = pre.keep, pre.source_px
            else:
                keep, source_px = self._source_keep(state, first_frame)
        motion_latent = pre.motion_latent if pre is not None and pre.motion_from is state.motion_pixels else None
        state.windows += 1
        return WindowWork(state, s, audio, noise, cond, step_noise, keep, source_px, motion_latent)

    def _motion_latent(self, work: WindowWork) -> Tensor:
        if work.motion_latent is not None:
            return work.motion_latent
        return self.pipe.encode_motion(work.state.motion_pixels)

    def window(self, state: LiveState, audio: Tensor, first_frame: int,
               settings: WindowSettings | None = None) -> Iterator[np.ndarray]:
        """Generate the window whose new frames start at output frame `first_frame`.

        audio: [S, F, 5, layers, width] windowed speech features for the window's F frames
        (output frames first_frame - M .. first_frame + N - 1). Yields N uint8 frames [H, W, 3].
        """
        work = self.prepare(state, audio, first_frame, settings)
        latent = self.pipe.denoise(work.cond, audio, self._motion_latent(work), work.noise, work.settings,
                                   state.source.speaker_masks, work.step_noise, keep=work.keep)
        for _, frame in self._lagged((0, work, chunk) for chunk in self.pipe.decode_stream(latent)):
            yield frame

    def windows(self, works: list[WindowWork]) -> Iterator[tuple[int, np.ndarray]]:
        """Finish several prepared windows together (same size, speakers and settings): one motion
        encode, one DiT call per step and one VAE decode for all. Yields (index in `works`, frame) as
        each latent frame is decoded; per window the frames equal `window()`'s up to float rounding."""
        if len(works) == 1:
            w = works[0]
            latent_one = self.pipe.denoise(w.cond, w.audio, self._motion_latent(w), w.noise,
                                           w.settings, w.state.source.speaker_masks, w.step_noise, keep=w.keep)
            yield from self._lagged((0, w, chunk) for chunk in self.pipe.decode_stream(latent_one))
            return
        s = works[0].settings
        if any(w.settings != s for w in works):
            raise ValueError("windows batched together must share their settings (steps, guidance)")
        todo = [k for k, w in enumerate(works) if w.motion_latent is None]  # not encoded ahead
        encoded = dict(zip(todo, encode_motion_batch(self.pipe, [works[k].state.motion_pixels for k in todo]),
                           strict=True))
        motion = [encoded.get(k, w.motion_latent) for k, w in enumerate(works)]
        items = [DenoiseItem(w.cond, w.audio, m, w.noise, w.state.source.speaker_masks, w.step_noise, w.keep)
                 for w, m in zip(works, motion, strict=True)]
        latents = denoise_batch(self.pipe, items, s)
        yield from self._lagged(((k, w, chunk[k]) for chunk in decode_stream_batch(self.pipe, latents)
                                 for k, w in enumerate(works)))

    def _lagged(self, chunks: Iterator[tuple[int, WindowWork, Tensor]]) -> Iterator[tuple[int, np.ndarray]]:
        """(index, work, decoded chunk) -> (index, frame), each chunk's frames released once the next chunk
        is queued (on CUDA its decode then overlaps this chunk's copy to the host and its consumer)."""
        pending: list[tuple[int, WindowWork, PendingFrames | None, Tensor | None]] = []
        last: int | None = None
        for k, work, chunk in chunks:
            shown, motion = self._emit(work, chunk)
            if last is not None and k <= last:  # a new round of chunks: release the previous round
                yield from self._release(pending)
                pending = []
            pending.append((k, work, shown, motion))
            last = k
        yield from self._release(pending)

    @staticmethod
    def _release(pending: list) -> Iterator[tuple[int, np.ndarray]]:
        for k, work, shown, motion in pending:
            # Keep the motion frames current as frames are shown, so a window cut short by an
            # interrupt still continues from what was last produced.
            if motion is not None:
                work.state.motion_pixels = motion
            if shown is not None:
                yield from ((k, f) for f in shown.frames())

    def _emit(self, work: WindowWork, chunk: Tensor) -> tuple[PendingFrames | None, Tensor | None]:
        """A decoded chunk [3, n, H, W] -> (its new frames on their way to the host, the motion frames as of
        this chunk to publish when they are shown)."""
        state, M = work.state, work.settings.motion_frames
        chunk = chunk.float()
        if state.colour_ref is not None:
            with maybe_stage(self.pipe.times, "colour_match"):
                chunk = match_colours(chunk, state.colour_ref, work.settings.colour_strength)
        if work.source_px is not None and state.regen_pixel_mask is not None:
            m = state.regen_pixel_mask[0].to(chunk)
            src = work.source_px[:, work.produced : work.produced + chunk.shape[1]].to(chunk)
            chunk = m * chunk + (1.0 - m) * src
        work.recent = chunk if work.recent is None else torch.cat([work.recent, chunk], dim=1)[:, -M:]
        start = max(0, M - work.produced)
        work.produced += chunk.shape[1]
        motion = work.recent[:, -M:].clone() if work.produced >= M else None
        shown = self.handoff.submit(chunk[:, start:]) if start < chunk.shape[1] else None
        return shown, motion
