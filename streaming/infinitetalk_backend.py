"""The `infinitetalk` backend: live speech -> wav2vec2 features -> InfiniteTalk windows, endlessly.

Glue between the engine and model/'s one-window generator (`LiveWindowRunner`). Per session it keeps
an incremental feature extractor per speaker and the embeddings of recent frames. A window of N new
frames (output frames [first, first + N)) is generated as F = M + N frames whose first M re-make the
previous window's last frames, so it needs speech features for frames [first - M - 2, first + N + 2)
(the DiT reads each frame's features with neighbours -2..+2). The engine supplies the window's audio
plus enough look-ahead for the extractor to have finished those frames.

Idle windows (nobody speaking) use embeddings of digital silence computed once through the same
extractor, as the task asks, so the avatar idles naturally; a video avatar may instead play its
source video while idle (`idle="source"`), and the next speech window continues from its frames.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from model.infinitetalk import InfiniteTalkBundle, WindowSettings, u8_to_unit
from model.infinitetalk.live import LiveSource, LiveState, LiveWindowRunner
from model.infinitetalk.sizing import BUCKETS_480P, check_size, pick_bucket, resize_and_crop

from .features import FeatureSettings, IncrementalFeatureExtractor, SilenceEmbeddings
from .generator import Avatar, WindowJob, WindowSpec

log = logging.getLogger(__name__)

AUDIO_REACH = 2  # the DiT's audio window reads frames f-2 .. f+2


@dataclass(frozen=True)
class InfiniteTalkBackendSettings:
    """window: frames per window, motion frames, steps, guidance (model/infinitetalk WindowSettings).
    size: (height, width) to generate at; None picks the 480p bucket nearest the avatar's shape.
    seed: noise seed of every session (same audio + seed -> same video).
    features: live wav2vec2 extractor settings (look-ahead adds to latency).
    idle: "generate" (silent-audio windows) or "source" (video avatars play their source video).
    """

    window: WindowSettings = field(default_factory=WindowSettings)
    size: tuple[int, int] | None = None
    seed: int = 0
    features: FeatureSettings = field(default_factory=FeatureSettings)
    idle: Literal["generate", "source"] = "generate"
    fps: int = 25

    def __post_init__(self) -> None:
        if self.size is not None:
            check_size(self.size)
        if self.idle not in ("generate", "source"):
            raise ValueError("idle must be 'generate' or 'source'")


@dataclass
class _SessionState:
    live: LiveState
    extractors: list[IncrementalFeatureExtractor]
    embeddings: list[torch.Tensor]  # per speaker: [frames, layers, width], row 0 = output frame `emb_start`
    emb_start: int
    pushed_until: int  # absolute sample index (session timeline) pushed to the extractors
    source_u8: np.ndarray


def speaker_masks(boxes: tuple[tuple[int, int, int, int], ...], src_size: tuple[int, int],
                  out_hw: tuple[int, int], latent_hw: tuple[int, int]) -> torch.Tensor:
    """Speaker boxes (source pixels) -> [S+1, h, w] masks at latent size (speakers, then background)."""
    sw, sh = src_size
    oh, ow = out_hw
    scale = max(oh / sh, ow / sw)
    off_y, off_x = round((np.ceil(sh * scale) - oh) / 2), round((np.ceil(sw * scale) - ow) / 2)
    h, w = latent_hw
    masks = torch.zeros(len(boxes) + 1, h, w)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        ys = slice(max(0, int((y0 * scale - off_y) * h / oh)), max(0, min(h, int(np.ceil((y1 * scale - off_y) * h / oh)))))
        xs = slice(max(0, int((x0 * scale - off_x) * w / ow)), max(0, min(w, int(np.ceil((x1 * scale - off_x) * w / ow)))))
        masks[i, ys, xs] = 1.0
        if masks[i].sum() == 0:
            raise ValueError(f"speaker box {i} {boxes[i]} falls outside the generated frame")
    masks[-1] = (masks[:-1].sum(0) == 0).float()
    return masks


class InfiniteTalkGenerator:
    """`Generator` protocol implementation for the real model (any size: tiny random to 14B)."""

    name = "infinitetalk"

    def __init__(self, bundle: InfiniteTalkBundle, settings: InfiniteTalkBackendSettings | None = None) -> None:
        self.bundle = bundle
        self.settings = settings or InfiniteTalkBackendSettings()
        s = self.settings
        self.runner = LiveWindowRunner(bundle.pipe, s.window, output_fps=s.fps)
        probe = IncrementalFeatureExtractor(bundle.wav2vec2, s.features)
        self.window = WindowSpec(
            new_frames=s.window.new_frames, fps=s.fps, lookahead_frames=probe.max_delay_frames + AUDIO_REACH
        )
        self._silence = SilenceEmbeddings(bundle.wav2vec2, s.features)
        self.description = (
            f"infinitetalk: {bundle.description or 'InfiniteTalk'}; windows of {s.window.frame_num} frames "
            f"({s.window.motion_frames} motion), {s.window.steps} steps"
        )
        log.info("%s", self.description)

    # -------------------------------------------------------------- sizes
    def _size(self, avatar: Avatar) -> tuple[int, int]:
        if self.settings.size is not None:
            return self.settings.size
        return pick_bucket(avatar.frames.shape[1], avatar.frames.shape[2], BUCKETS_480P)

    def output_size(self, avatar: Avatar) -> tuple[int, int]:
        h, w = self._size(avatar)
        return w, h

    # -------------------------------------------------------------- sessions
    def open_session(self, session_id: str, avatar: Avatar, speakers: int = 1) -> _SessionState:
        h, w = self._size(avatar)
        frames = np.stack([resize_and_crop(f, (h, w)) for f in avatar.frames])
        stride = self.bundle.pipe.vae_stride
        masks = None
        if speakers > 1:
            if len(avatar.speaker_boxes) != speakers:
                raise ValueError(
                    f"{speakers} speakers need {speakers} speaker boxes on the avatar, got {len(avatar.speaker_boxes)}"
                )
            masks = speaker_masks(avatar.speaker_boxes, avatar.size, (h, w), (h // stride, w // stride))
        regen = None
        if avatar.regen_mask is not None:
            mask_u8 = np.repeat((np.clip(avatar.regen_mask, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=2)
            regen = torch.from_numpy(resize_and_crop(mask_u8, (h, w))[..., 0].astype(np.float32) / 255.0)
        source = LiveSource(torch.from_numpy(frames), fps=avatar.fps, speaker_masks=masks, regen_mask=regen)
        live = self.runner.start(source, self.settings.seed)
        extractors = [IncrementalFeatureExtractor(self.bundle.wav2vec2, self.settings.features, silence=self._silence)
                      for _ in range(speakers)]
        # The first window also reads M + 2 frames before the session began: feed them as silence.
        lead = self.settings.window.motion_frames + AUDIO_REACH
        spf = self.window.samples_per_frame
        embeddings = [ex.push(np.zeros(lead * spf, np.float32)) for ex in extractors]
        return _SessionState(live, extractors, embeddings, -lead, 0, frames)

    def close_session(self, state: _SessionState) -> None:
        state.extractors.clear()
        state.embeddings.clear()

    # -------------------------------------------------------------- windows
    def _push_audio(self, state: _SessionState, job: WindowJob) -> None:
        spec = self.window
        spf = spec.samples_per_frame
        job_start = job.first_frame * spf - spec.context_frames * spf
        offset = state.pushed_until - job_start
        if offset < 0:
            raise RuntimeError(f"audio gap: window {job.index} starts at sample {job_start}, pushed {state.pushed_until}")
        for s, ex in enumerate(state.extractors):
            new = ex.push(job.audio[s, offset:])
            if new.shape[0]:
                state.embeddings[s] = torch.cat([state.embeddings[s], new])
        state.pushed_until = job_start + job.audio.shape[1]

    def _window_rows(self, state: _SessionState, job: WindowJob) -> torch.Tensor:
        """[S, F, 5, layers, width] features for the window's F frames (first - M .. first + N - 1)."""
        M, F = self.settings.window.motion_frames, self.settings.window.frame_num
        lo = job.first_frame - M - AUDIO_REACH  # first frame whose features are needed
        hi = job.first_frame + self.window.new_frames + AUDIO_REACH  # exclusive
        out = []
        for emb in state.embeddings:
            a, b = lo - state.emb_start, hi - state.emb_start
            if a < 0 or b > emb.shape[0]:
                raise RuntimeError(
                    f"speech features for frames [{lo}, {hi}) not ready (have [{state.emb_start}, "
                    f"{state.emb_start + emb.shape[0]})): the window's look-ahead is too short"
                )
            span = emb[a:b]
            if not job.speech:
                span = self._silence(span.shape[0]).to(span)
            idx = torch.arange(F)[:, None] + torch.arange(2 * AUDIO_REACH + 1)[None, :]
            out.append(span[idx])
        # Forget features no window will read again.
        keep_from = job.first_frame + self.window.new_frames - M - AUDIO_REACH
        drop = keep_from - state.emb_start
        if drop > 0:
            state.embeddings = [e[drop:] for e in state.embeddings]
            state.emb_start = keep_from
        return torch.stack(out)

    def generate(self, state: _SessionState, job: WindowJob) -> Iterator[np.ndarray]:
        self._push_audio(state, job)
        audio = self._window_rows(state, job)
        if not job.speech and self.settings.idle == "source" and state.source_u8.shape[0] > 1:
            yield from self._play_source(state, job)
            return
        yield from self.runner.window(state.live, audio, job.first_frame)

    def _play_source(self, state: _SessionState, job: WindowJob) -> Iterator[np.ndarray]:
        """Idle with a video avatar: show the source video; the next window continues from it."""
        src = state.live.source
        shown = []
        for f in range(job.first_frame, job.first_frame + self.window.new_frames):
            frame = state.source_u8[src.index_at(f, self.settings.fps)]
            shown.append(frame)
            yield frame
        M = self.settings.window.motion_frames
        if len(shown) >= M:
            state.live.motion_pixels = u8_to_unit(torch.from_numpy(np.stack(shown[-M:])))  # [3, M, H, W]
