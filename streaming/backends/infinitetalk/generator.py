"""The `infinitetalk` backend: live speech -> wav2vec2 features -> InfiniteTalk windows, endlessly.

Glue between the engine and model/'s one-window generator (`LiveWindowRunner`). Per session it keeps
an incremental feature extractor per speaker and the embeddings of recent frames. A window of N new
frames (output frames [first, first + N)) is generated as F = M + N frames whose first M re-make the
previous window's last frames, so it needs speech features for frames [first - M - 2, first + N + 2)
(the DiT reads each frame's features with neighbours -2..+2). The engine supplies the window's audio
plus enough look-ahead for the extractor to have finished those frames.

Speech features come one of two ways (`audio_features`): "incremental" (default) runs wav2vec2 on
the live stream once per sample and waits for a little future audio, so a window's features equal
the whole clip's; "rolling" is SoulX-FlashTalk's streaming path (streaming/features/rolling.py): the
last 8 s re-encoded per window, no look-ahead, 0.52 s less latency.
With generated speech (a TTS engine's segments, faster than real time) the incremental path takes,
for the frames of a segment, the segment's whole-clip features instead (segment_features.py).

Idle windows (nobody speaking) use embeddings of digital silence computed once through the same
extractor, as the task asks, so the avatar idles naturally; a video avatar may instead play its
source video while idle (`idle="source"`), and the next speech window continues from its frames.

Several sessions: jobs of different sessions with the same shape and settings are made in one
batched pass (`batch_key` / `prepare_window` / `generate_batch`, used by the engine's worker).
Adaptive quality: a job may ask for fewer steps (`extras["steps"]`) or a smaller generation size
(`extras["size"]`, one of `quality_range().sizes`); a size switch re-conditions the session at a
window boundary (motion frames resized) and frames are scaled back up to the session's output size.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np
import torch

from model.infinitetalk import InfiniteTalkBundle, WindowSettings, u8_to_unit
from model.infinitetalk.live import LiveSource, LiveState, LiveWindowRunner, WindowWork
from model.infinitetalk.sizing import BUCKETS_480P, check_size, pick_bucket, resize_and_crop
from model.infinitetalk.timing import maybe_stage
from model.sampling import DISTILLED_STEP_LISTS, distilled_step_list
from model.timebase import VIDEO_FPS
from streaming.features import FeatureSettings, IncrementalFeatureExtractor, SilenceEmbeddings
from streaming.features.rolling import RollingClipFeatures
from streaming.generator import CONTINUE_FROM, FRAMES_CUT, Avatar, QualityRange, WindowJob, WindowSpec
from streaming.segment_clips import SEGMENT_CLIPS

from .segment_features import SegmentFeatures

log = logging.getLogger(__name__)

AUDIO_REACH = 2  # the DiT's audio window reads frames f-2 .. f+2


@dataclass(frozen=True)
class InfiniteTalkBackendSettings:
    """window: frames per window, motion frames, steps, guidance (model/infinitetalk WindowSettings).
    size: (height, width) to generate at; None picks the 480p bucket nearest the avatar's shape.
    seed: noise seed of every session (same audio + seed -> same video).
    features: live wav2vec2 extractor settings (look-ahead adds to latency).
    audio_features: "incremental" (the extractor above, with look-ahead) or "rolling" (FlashTalk's:
        the last `rolling_seconds` of speech re-encoded for every window, no look-ahead).
    idle: "generate" (silent-audio windows) or "source" (video avatars play their source video).
    max_batch: most sessions' windows made in one batched pass (1 = one at a time).
    min_steps: fewest steps adaptive quality may use (None: a quarter of `window.steps`, at least 1);
        distilled schedules (`window.step_list`) only use their named step counts (4 -> 2).
    size_scales: generation sizes adaptive quality may switch to, as fractions of the full size
        (rounded to multiples of 16); (1.0,) = never switch.
    segment_clip_s: generated speech with incremental features: each segment's features are the
        whole-clip ones (segment_features.py), over clips of at most this long (a longer segment is
        cut into blocks); bounds the cost per window and the rows kept. 0: live features only.
    """

    window: WindowSettings = field(default_factory=WindowSettings)
    size: tuple[int, int] | None = None
    seed: int = 0
    features: FeatureSettings = field(default_factory=FeatureSettings)
    audio_features: Literal["incremental", "rolling"] = "incremental"
    rolling_seconds: float = 8.0
    idle: Literal["generate", "source"] = "generate"
    fps: int = VIDEO_FPS
    max_batch: int = 4
    min_steps: int | None = None
    size_scales: tuple[float, ...] = (1.0, 0.75)
    segment_clip_s: float = 30.0

    def __post_init__(self) -> None:
        if self.size is not None:
            check_size(self.size)
        if self.max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if not self.size_scales or any(not 0 < f <= 1 for f in self.size_scales):
            raise ValueError(f"size_scales must be fractions in (0, 1], got {self.size_scales}")
        if self.idle not in ("generate", "source"):
            raise ValueError("idle must be 'generate' or 'source'")
        if self.audio_features not in ("incremental", "rolling"):
            raise ValueError(f"audio_features must be 'incremental' or 'rolling', got {self.audio_features!r}")
        if self.segment_clip_s < 0:
            raise ValueError(f"segment_clip_s must be >= 0, got {self.segment_clip_s}")
        if self.audio_features == "rolling" and self.rolling_seconds * self.fps < self.window.frame_num:
            raise ValueError(f"rolling_seconds {self.rolling_seconds} is shorter than a window of "
                             f"{self.window.frame_num} frames")


@dataclass
class _SessionState:
    live: LiveState
    extractors: list[IncrementalFeatureExtractor] | list[RollingClipFeatures]  # one per speaker
    embeddings: list[torch.Tensor]  # per speaker: [frames, layers, width], row 0 = output frame `emb_start`
    emb_start: int
    pushed_until: int  # absolute sample index (session timeline) pushed to the extractors
    source_u8: np.ndarray  # [N, h, w, 3] the avatar at the current generation size
    avatar: Avatar
    full_size: tuple[int, int]  # (height, width) of the frames delivered
    size: tuple[int, int]  # current generation size
    source_lag: int = 0  # made frames dropped unseen: the source video follows the frames shown
    segments: SegmentFeatures | None = None  # generated speech: whole-segment features


@dataclass
class _Work:
    """A window prepared for a batched pass."""

    state: _SessionState
    window: WindowWork
    job: WindowJob


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
        self.max_batch = s.max_batch
        self.continue_frames = s.window.motion_frames  # ContinuingGenerator: speech may cut queued idle frames
        self.runner = LiveWindowRunner(bundle.pipe, s.window, output_fps=s.fps)
        self.rolling = s.audio_features == "rolling"
        if self.rolling:  # a window runs as soon as its own audio is in
            lookahead = 0
        else:
            lookahead = IncrementalFeatureExtractor(bundle.wav2vec2, s.features).max_delay_frames + AUDIO_REACH
        self.window = WindowSpec(new_frames=s.window.new_frames, fps=s.fps, lookahead_frames=lookahead)
        # SegmentFeaturesGenerator: whole-segment features with generated speech (incremental path only:
        # the rolling path is itself FlashTalk's reference)
        self.segment_clip_frames = 0 if self.rolling else int(round(s.segment_clip_s * s.fps))
        self.segment_reach_frames = s.window.motion_frames + AUDIO_REACH
        self._silence = SilenceEmbeddings(bundle.wav2vec2, s.features)
        self._rolling_silence: dict[int, torch.Tensor] = {}
        features = (f"rolling {s.rolling_seconds:g} s speech features, no look-ahead" if self.rolling
                    else f"incremental speech features, {lookahead} frames look-ahead")
        self.description = (
            f"infinitetalk: {bundle.description or 'InfiniteTalk'}; windows of {s.window.frame_num} frames "
            f"({s.window.motion_frames} motion), {s.window.steps} steps, {features}"
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

    def quality_range(self, avatar: Avatar) -> QualityRange:
        """Steps and sizes adaptive quality may use for this avatar (see the settings)."""
        win = self.settings.window
        steps = win.steps
        min_steps = min(steps, self.settings.min_steps or max(1, math.ceil(steps / 4)))
        choices: tuple[int, ...] = ()
        if win.step_list is not None:  # a distilled schedule runs only its named step counts (4 -> 2)
            named = tuple(sorted(k for k in DISTILLED_STEP_LISTS if k <= steps))
            choices = named if steps in named else (steps,)
            min_steps = max(min_steps, choices[0])
        full = self._size(avatar)
        sizes: list[tuple[int, int]] = []
        for f in sorted(self.settings.size_scales, reverse=True):
            size = tuple(max(16, int(round(d * f / 16)) * 16) for d in full)
            if size not in sizes:
                sizes.append(size)  # type: ignore[arg-type]
        if full not in sizes:
            sizes.insert(0, full)
        return QualityRange(steps, min(min_steps, steps), tuple(sizes), choices)

    def _source(self, avatar: Avatar, size: tuple[int, int], speakers: int) -> tuple[np.ndarray, LiveSource]:
        h, w = size
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
        return frames, source

    # -------------------------------------------------------------- sessions
    def open_session(self, session_id: str, avatar: Avatar, speakers: int = 1) -> _SessionState:
        size = self._size(avatar)
        frames, source = self._source(avatar, size, speakers)
        live = self.runner.start(source, self.settings.seed)
        if self.rolling:  # the buffer starts as silence, as FlashTalk's does
            rolling = [RollingClipFeatures(self.bundle.wav2vec2, self.settings.rolling_seconds) for _ in range(speakers)]
            return _SessionState(live, rolling, [], 0, 0, frames, avatar, size, size)
        extractors = [IncrementalFeatureExtractor(self.bundle.wav2vec2, self.settings.features, silence=self._silence)
                      for _ in range(speakers)]
        # The first window also reads M + 2 frames before the session began: feed them as silence.
        lead = self.settings.window.motion_frames + AUDIO_REACH
        spf = self.window.samples_per_frame
        embeddings = [ex.push(np.zeros(lead * spf, np.float32)) for ex in extractors]
        segments = SegmentFeatures(self.bundle.wav2vec2, self.settings.features.loudness)
        return _SessionState(live, extractors, embeddings, -lead, 0, frames, avatar, size, size, segments=segments)

    def close(self) -> None:
        """Backend shutdown (`ClosingGenerator`): the model releases what it holds beyond this process
        (the follower ranks of a sequence-parallel DiT, waiting for calls)."""
        self.bundle.close()

    def close_session(self, state: _SessionState) -> None:
        state.extractors.clear()
        state.embeddings.clear()

    # -------------------------------------------------------------- windows
    def _push_audio(self, state: _SessionState, job: WindowJob) -> None:
        spec = self.window
        spf = spec.samples_per_frame
        job_start = job.first_frame * spf - spec.context_frames * spf
        offset = state.pushed_until - job_start
        audio = job.audio
        if offset < 0:
            # A window was cancelled before it ran (interrupt): its audio never reached the extractors.
            # What was dropped was interrupted speech; silence keeps the timeline continuous.
            log.debug("window %d: %d samples skipped by a cancelled window fed as silence", job.index, -offset)
            audio = np.concatenate([np.zeros((audio.shape[0], -offset), np.float32), audio], axis=1)
            offset = 0
        if self.rolling:  # exactly up to the window's last frame: rolling features read no future audio
            window_end = (job.first_frame + spec.new_frames) * spf  # audio[:, offset] is sample pushed_until
            need = window_end - state.pushed_until
            audio = audio[:, offset:offset + need]
            if audio.shape[1] < need:
                audio = np.pad(audio, ((0, 0), (0, need - audio.shape[1])))
            for s, roll in enumerate(state.extractors):
                roll.push(audio[s])  # type: ignore[union-attr]
            state.pushed_until = window_end
            return
        # Look-ahead padding (audio not yet arrived) never enters the stream: the next window brings it.
        padding = 0 if job.lookahead_samples is None else spec.lookahead_frames * spf - job.lookahead_samples
        real_end = job_start + job.audio.shape[1] - max(0, padding)
        count = max(0, real_end - state.pushed_until)
        with maybe_stage(self.bundle.pipe.times, "features"):
            for s, ex in enumerate(state.extractors):
                new = ex.push(audio[s, offset:offset + count])
                if new.shape[0]:
                    state.embeddings[s] = torch.cat([state.embeddings[s], new])
        state.pushed_until = max(state.pushed_until, real_end)

    def _window_rows(self, state: _SessionState, job: WindowJob) -> torch.Tensor:
        """[S, F, 5, layers, width] features for the window's F frames (first - M .. first + N - 1)."""
        M, F = self.settings.window.motion_frames, self.settings.window.frame_num
        if self.rolling:
            return self._rolling_rows(state, job, F)
        lo = job.first_frame - M - AUDIO_REACH  # first frame whose features are needed
        hi = job.first_frame + self.window.new_frames + AUDIO_REACH  # exclusive
        clips = job.extras.get(SEGMENT_CLIPS) if job.speech and state.segments is not None else None
        out = []
        for ex, emb in zip(state.extractors, state.embeddings, strict=True):
            a, b = lo - state.emb_start, hi - state.emb_start
            if a < 0:
                raise RuntimeError(f"speech features for frames [{lo}, {hi}) were already dropped "
                                   f"(have [{state.emb_start}, {state.emb_start + emb.shape[0]}))")
            if not job.speech:
                span = self._silence(b - a).to(emb)
            else:
                if b > emb.shape[0]:  # look-ahead missing: zeros stand in, for this window only
                    missing = b - emb.shape[0] + ex.max_delay_frames + 1  # type: ignore[union-attr]
                    with maybe_stage(self.bundle.pipe.times, "features"):
                        extra = ex.provisional(np.zeros(missing * self.window.samples_per_frame, np.float32))
                    emb = torch.cat([emb, extra])
                if b > emb.shape[0]:
                    raise RuntimeError(f"speech features for frames [{lo}, {hi}) not ready "
                                       f"(have [{state.emb_start}, {state.emb_start + emb.shape[0]}))")
                span = emb[a:b]
                if clips:  # generated speech: the segment's whole-clip rows where it plays
                    with maybe_stage(self.bundle.pipe.times, "features"):
                        span = state.segments.overlay(span, torch.arange(lo, hi), state.segments.rows(clips))  # type: ignore[union-attr]
            idx = torch.arange(F)[:, None] + torch.arange(2 * AUDIO_REACH + 1)[None, :]
            out.append(span[idx])
        # Forget features no window will read again.
        keep_from = job.first_frame + self.window.new_frames - M - AUDIO_REACH
        drop = min(keep_from - state.emb_start, *(e.shape[0] for e in state.embeddings))  # only rows made
        if drop > 0:
            state.embeddings = [e[drop:] for e in state.embeddings]
            state.emb_start += drop
        return torch.stack(out)

    def _rolling_rows(self, state: _SessionState, job: WindowJob, frames: int) -> torch.Tensor:
        if not job.speech:  # idle: what the rolling path makes of its buffer of silence, computed once
            if frames not in self._rolling_silence:
                self._rolling_silence[frames] = RollingClipFeatures(
                    self.bundle.wav2vec2, self.settings.rolling_seconds).window(frames)
            return self._rolling_silence[frames][None].expand(len(state.extractors), *[-1] * 4)
        with maybe_stage(self.bundle.pipe.times, "features"):
            return torch.stack([roll.window(frames) for roll in state.extractors])  # type: ignore[union-attr]

    def _window_settings(self, job: WindowJob):
        steps = job.extras.get("steps")
        base = self.settings.window
        if steps is None or steps == base.steps:
            return base
        if base.step_list is not None:
            step_list = distilled_step_list(int(steps))
            if step_list is None:
                raise ValueError(f"this distilled schedule runs {sorted(DISTILLED_STEP_LISTS)} steps, not {steps}")
            return dataclasses.replace(base, steps=int(steps), step_list=step_list)
        return dataclasses.replace(base, steps=int(steps))

    def _switch_size(self, state: _SessionState, job: WindowJob) -> None:
        size = tuple(job.extras.get("size") or state.full_size)
        if size == state.size:
            return
        check_size(size)  # type: ignore[arg-type]
        frames, source = self._source(state.avatar, size, len(state.extractors))  # type: ignore[arg-type]
        self.runner.switch_source(state.live, source)
        log.info("generation size %dx%d -> %dx%d at window %d", *state.size, *size, job.index)
        state.source_u8, state.size = frames, size  # type: ignore[assignment]

    def _continue_from(self, state: _SessionState, job: WindowJob) -> None:
        """Continue from the frames the engine says were shown last (it dropped idle frames nobody saw)."""
        shown = job.extras.get(CONTINUE_FROM)
        if shown is None:
            return
        state.source_lag += int(job.extras.get(FRAMES_CUT, 0))
        h, w = state.size
        frames = [f if f.shape[:2] == (h, w) else cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA)
                  for f in shown[-self.settings.window.motion_frames:]]
        state.live.motion_pixels = u8_to_unit(torch.from_numpy(np.stack(frames)))  # [3, M, H, W]

    @staticmethod
    def _source_frame(state: _SessionState, job: WindowJob) -> int:
        """The window's first frame on the shown timeline (where a video avatar's source is read)."""
        return job.first_frame - state.source_lag

    def _out(self, state: _SessionState, frame: np.ndarray) -> np.ndarray:
        """Frames made at a reduced size are scaled to the session's output size."""
        if state.size == state.full_size:
            return frame
        h, w = state.full_size
        return cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR)

    def _uses_source(self, state: _SessionState, job: WindowJob) -> bool:
        return not job.speech and self.settings.idle == "source" and state.source_u8.shape[0] > 1

    def _begin(self, state: _SessionState, job: WindowJob) -> torch.Tensor:
        """Every window's first steps: its audio into the features, its rows out, the size it asks
        for, the frames it continues from. Returns the rows."""
        self._push_audio(state, job)
        audio = self._window_rows(state, job)
        self._switch_size(state, job)
        self._continue_from(state, job)
        return audio

    def generate(self, state: _SessionState, job: WindowJob) -> Iterator[np.ndarray]:
        audio = self._begin(state, job)
        if self._uses_source(state, job):
            yield from (self._out(state, f) for f in self._play_source(state, job))
            return
        for frame in self.runner.window(state.live, audio, self._source_frame(state, job), self._window_settings(job)):
            yield self._out(state, frame)
        self._prepare_next(state, job)

    def _prepare_next(self, state: _SessionState, job: WindowJob) -> None:
        """Encode the next window's audio-free inputs now, so it starts sooner once its speech is in."""
        self.runner.prepare_ahead(state.live, self._source_frame(state, job) + self.window.new_frames)

    # -------------------------------------------------------------- batching (see the worker)
    def batch_key(self, state: _SessionState, job: WindowJob) -> Hashable | None:
        """Windows with the same generation size, speaker count and steps share a pass."""
        if self._uses_source(state, job):
            return None
        size = tuple(job.extras.get("size") or state.full_size)
        return size, len(state.extractors), self._window_settings(job).steps

    def prepare_window(self, state: _SessionState, job: WindowJob) -> _Work:
        audio = self._begin(state, job)
        work = self.runner.prepare(state.live, audio, self._source_frame(state, job), self._window_settings(job))
        return _Work(state, work, job)

    def generate_batch(self, works: Sequence[_Work]) -> Iterator[tuple[int, np.ndarray]]:
        for k, frame in self.runner.windows([w.window for w in works]):
            yield k, self._out(works[k].state, frame)
        for w in works:
            self._prepare_next(w.state, w.job)

    def _play_source(self, state: _SessionState, job: WindowJob) -> Iterator[np.ndarray]:
        """Idle with a video avatar: show the source video; the next window continues from it."""
        src = state.live.source
        shown = []
        first = self._source_frame(state, job)
        for f in range(first, first + self.window.new_frames):
            frame = state.source_u8[src.index_at(f, self.settings.fps)]
            shown.append(frame)
            yield frame
        M = self.settings.window.motion_frames
        if len(shown) >= M:
            state.live.motion_pixels = u8_to_unit(torch.from_numpy(np.stack(shown[-M:])))  # [3, M, H, W]
