"""The FlashHead presets on live speech: rolling 8 s wav2vec2 features -> 33-frame chunks, endlessly.

SoulX-FlashHead's streaming mode (reference `generate_video.py --audio_encode_mode stream`): every
chunk appends its 28 (Pro) or 24 (Lite) new frames' audio to a rolling 8 s buffer that starts as silence,
re-encodes the whole buffer with wav2vec2-base-960h (no loudness normalisation: the reference has it
commented out), takes the last 33 frames' +-2 windows clamped at the newest frame, samples one chunk
and shows its frames after the motion frames. So a chunk runs as soon as its own audio is in (no
look-ahead), and frame f of a window plays with audio frame f exactly.

Several sessions: their chunks sample together, one batched DiT call per step (`batch_key` /
`prepare_window` / `generate_batch`, used by the engine's worker); decode and colour stay per session.
The reference's optional face crop
(`--use_face_crop`, mediapipe) is offered with the OpenCV face box of the lite backend instead
(`face_crop`): the same square around the face (face width x 2, 55 % of it above the box centre),
clipped to the image; without it the avatar is scaled to cover 512x512 and centre-cropped.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from model.flashhead.assemble import FlashHeadModel
from model.flashhead.loop import ChunkInputs, FlashHeadChunker, denoise_batch
from model.infinitetalk.long_video import u8_to_unit
from model.infinitetalk.sizing import resize_and_crop
from model.infinitetalk.timing import maybe_stage
from model.timebase import VIDEO_FPS
from streaming.backends.lite.face import detect_face_box
from streaming.features.rolling import RollingClipFeatures
from streaming.generator import Avatar, WindowJob, WindowSpec
from streaming.segment_clips import SEGMENT_CLIPS

from .segment_features import SegmentFeatures

log = logging.getLogger(__name__)


@dataclass
class _FlashHeadSession:
    chunker: FlashHeadChunker
    features: RollingClipFeatures
    segments: SegmentFeatures  # generated speech: whole-segment features (the reference's "once" mode)
    pushed_until: int = 0  # session sample index up to which audio entered the rolling buffer


@dataclass
class _FlashHeadWork:
    """A prepared chunk: its session, its sampling inputs (features and draws taken)."""

    state: _FlashHeadSession
    inputs: ChunkInputs


FACE_RATIO = 2.0
"""The reference's `face_ratio`: the crop's side is this many face widths."""


def face_crop(rgb: np.ndarray, box: tuple[int, int, int, int], ratio: float = FACE_RATIO) -> np.ndarray:
    """The reference's `get_scaled_bbox` on a face box (x, y, w, h): a square of side ratio * w centred on
    the box horizontally, 55 % of it above the box centre, clipped to the image. uint8 [h, w, 3] out."""
    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    side = w * ratio
    img_h, img_w = rgb.shape[:2]
    x1, y1 = int(max(0, cx - side * 0.5)), int(max(0, cy - side * 0.55))
    x2, y2 = int(min(img_w, cx + side * 0.5)), int(min(img_h, cy + side * 0.45))
    return np.ascontiguousarray(rgb[y1:y2, x1:x2])


def unit_to_u8(video: torch.Tensor) -> np.ndarray:
    """[3, F, H, W] in [-1, 1] -> uint8 [F, H, W, 3], truncated like the reference's `run_pipeline`."""
    return (((video + 1) / 2).clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 3, 0).cpu().numpy()


class FlashHeadGenerator:
    """`Generator` for the flashhead-pro / flashhead-lite presets (built by the infinitetalk backend)."""

    name = "flashhead"

    def __init__(self, model: FlashHeadModel, seed: int = 0, max_batch: int = 4, face_crop: bool = False,
                 segment_clip_s: float = 30.0) -> None:
        self.model = model
        self.seed = seed
        self.max_batch = max_batch
        self.crop_face = face_crop
        self.window = WindowSpec(new_frames=model.new_frames, fps=VIDEO_FPS)
        c = model.chunk
        # SegmentFeaturesGenerator: with generated speech, a chunk reads each segment's whole-clip rows
        self.segment_clip_frames = int(round(segment_clip_s * VIDEO_FPS))
        self.segment_reach_frames = c.frame_num - model.new_frames + 2
        self.description = (
            f"flashhead: {model.description}; chunks of {c.frame_num} frames ({model.motion_frames} motion), "
            f"{c.sampler.steps} steps, rolling {model.rolling_seconds:g} s speech features, no look-ahead"
        )
        log.info("%s", self.description)

    def output_size(self, avatar: Avatar) -> tuple[int, int]:
        h, w = self.model.size
        return w, h

    def open_session(self, session_id: str, avatar: Avatar, speakers: int = 1) -> _FlashHeadSession:
        if speakers != 1:
            raise ValueError(f"FlashHead animates one speaker; this session has {speakers}")
        m = self.model
        image = avatar.frames[0]
        if self.crop_face:
            box, detector = detect_face_box(image)
            log.info("session %s: avatar cropped around the face (%s box %s)", session_id, detector, box)
            image = face_crop(image, box)
        ref = u8_to_unit(torch.from_numpy(resize_and_crop(image, m.size).copy()))  # [3, H, W]
        chunker = FlashHeadChunker(m.dit, m.vae, ref.to(m.vae.device), m.chunk, self.seed)
        return _FlashHeadSession(chunker, RollingClipFeatures(m.wav2vec2, m.rolling_seconds, loudness=False),
                                 SegmentFeatures(m.wav2vec2, loudness=False))

    def close_session(self, state: _FlashHeadSession) -> None:
        state.features = None  # type: ignore[assignment]
        state.segments = None  # type: ignore[assignment]

    def _push_audio(self, state: _FlashHeadSession, job: WindowJob) -> None:
        """The window's own audio into the rolling buffer (a gap left by a cancelled window as silence)."""
        spf = self.window.samples_per_frame
        start = job.first_frame * spf
        if start > state.pushed_until:
            state.features.push(np.zeros(start - state.pushed_until, np.float32))
        skip = max(0, state.pushed_until - start)  # already in (a window re-run after an interrupt)
        state.features.push(job.audio[0, skip:self.window.window_samples])
        state.pushed_until = start + self.window.window_samples

    def _rows(self, state: _FlashHeadSession, job: WindowJob) -> torch.Tensor:
        """[F, 5, layers, width]: the rolling path's windows; with generated speech, entries of frames
        inside a segment are that segment's whole-clip rows instead (the reference's offline "once"
        mode: neighbours past the window are the segment's own audio, not clamped at the newest frame)."""
        self._push_audio(state, job)
        F = self.model.chunk.frame_num
        with maybe_stage(state.chunker.times, "features"):
            windows = state.features.window(F)
            clips = job.extras.get(SEGMENT_CLIPS)
            if clips:
                first = job.first_frame + self.window.new_frames - F  # the chunk's first frame
                frames = first + torch.arange(F)[:, None] + torch.arange(5)[None, :] - 2
                windows = state.segments.overlay(windows, frames, state.segments.rows(clips))
            return windows

    def _frames(self, video: torch.Tensor) -> np.ndarray:
        return unit_to_u8(video[:, self.model.motion_frames:])

    def generate(self, state: _FlashHeadSession, job: WindowJob) -> Iterator[np.ndarray]:
        yield from self._frames(state.chunker.chunk(self._rows(state, job)))

    # -------------------------------------------------------------- batching (see the worker)
    def batch_key(self, state: _FlashHeadSession, job: WindowJob) -> Hashable | None:
        """Every session of this model has the same shape and schedule: all may share a pass."""
        return self.model.size, self.model.chunk.sampler.steps

    def prepare_window(self, state: _FlashHeadSession, job: WindowJob) -> _FlashHeadWork:
        return _FlashHeadWork(state, state.chunker.inputs(self._rows(state, job)))

    def generate_batch(self, works: Sequence[_FlashHeadWork]) -> Iterator[tuple[int, np.ndarray]]:
        first = works[0].state.chunker
        latents = denoise_batch(self.model.dit, [w.inputs for w in works], first.timesteps, times=first.times)
        for k, (work, latent) in enumerate(zip(works, latents, strict=True)):
            for frame in self._frames(work.state.chunker.finish(latent)):
                yield k, frame
