"""The `Generator` protocol: the one seam between the real-time engine and whatever makes video.

The engine (sessions, planner, worker, pacer) never imports a model. It hands a backend one
window of audio at a time and receives that window's new video frames back, in order, as the
backend produces them (a backend may yield frame by frame, e.g. as its VAE decodes, so the
pacer can start playing before the window is finished).

Time is counted in output video frames. At 16 kHz and 25 fps one frame is exactly 640 samples,
so every frame owns an exact slice of audio and lips and sound cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from model.timebase import SAMPLE_RATE as SAMPLE_RATE  # every audio array inside the engine: 16 kHz mono
from model.timebase import VIDEO_FPS  # float32 in [-1, 1], one row per speaker

DEFAULT_FPS = VIDEO_FPS


@dataclass(frozen=True)
class WindowSpec:
    """How a backend cuts time into windows.

    new_frames: output frames each window adds (InfiniteTalk 81/9 -> 72; lite: a few frames).
    fps: output frame rate; SAMPLE_RATE must be a multiple of it.
    context_frames: audio before the window's first frame that the backend wants to see
        (e.g. wav2vec2 left context); the engine supplies silence before the session began.
    lookahead_frames: audio after the window's last frame the backend needs before it can run
        (e.g. the +-2 frame audio windows, wav2vec2 look-ahead). Adds directly to latency.
    """

    new_frames: int
    fps: int = DEFAULT_FPS
    context_frames: int = 0
    lookahead_frames: int = 0

    def __post_init__(self) -> None:
        if self.new_frames < 1:
            raise ValueError(f"new_frames must be >= 1, got {self.new_frames}")
        if SAMPLE_RATE % self.fps:
            raise ValueError(f"fps {self.fps} does not divide {SAMPLE_RATE} Hz; pick e.g. 25, 20, 16")
        if self.context_frames < 0 or self.lookahead_frames < 0:
            raise ValueError("context_frames and lookahead_frames must be >= 0")

    @property
    def samples_per_frame(self) -> int:
        return SAMPLE_RATE // self.fps

    @property
    def window_samples(self) -> int:
        """Samples of audio that the window's new frames stand for (and are played with)."""
        return self.new_frames * self.samples_per_frame

    @property
    def job_samples(self) -> int:
        """Samples in `WindowJob.audio`: left context + the window + look-ahead."""
        return (self.context_frames + self.new_frames + self.lookahead_frames) * self.samples_per_frame

    @property
    def window_seconds(self) -> float:
        return self.new_frames / self.fps


@dataclass(frozen=True)
class Avatar:
    """What the avatar looks like: a still image (N == 1) or a looping video, RGB uint8 [N, H, W, 3].

    speaker_boxes: optional (x0, y0, x1, y1) pixel boxes, one per speaker, for multi-speaker backends.
    regen_mask: optional float [H, W] in [0, 1] on the source: where a backend may regenerate the picture
        (e.g. the head of a video avatar); elsewhere it keeps the source. None: everywhere.
    """

    name: str
    frames: np.ndarray
    fps: float = float(DEFAULT_FPS)
    speaker_boxes: tuple[tuple[int, int, int, int], ...] = ()
    regen_mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        f = self.frames
        if f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8 or f.shape[0] < 1:
            raise ValueError(f"avatar frames must be uint8 [N, H, W, 3], got {f.dtype} {list(f.shape)}")

    @property
    def is_video(self) -> bool:
        return self.frames.shape[0] > 1

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the source."""
        return int(self.frames.shape[2]), int(self.frames.shape[1])


@dataclass
class WindowJob:
    """One window of work for a backend.

    audio: float32 [speakers, spec.job_samples] at SAMPLE_RATE; columns are
        [context | window | look-ahead]. Idle windows carry silence (zeros).
    first_frame: session-wide index of the window's first new frame (0, new_frames, ...).
    speech: False when the window is idle (no one is speaking); backends may animate idling.
    extras: per-window requests from the engine, e.g. "steps" (int) and "size" ((height, width)) set
        by the adaptive quality controller for backends that offer a `QualityRange`.
    lookahead_samples: how many look-ahead samples are real audio; the rest of the look-ahead
        columns is zero padding for audio that had not arrived when the window had to run (None: all
        real). A backend must not take the padding for the stream's audio: the real samples come
        with the next window.
    """

    session_id: str
    index: int
    first_frame: int
    audio: np.ndarray
    speech: bool
    extras: dict[str, Any] = field(default_factory=dict)
    lookahead_samples: int | None = None


@runtime_checkable
class Generator(Protocol):
    """A video backend. Implementations: the packages under `streaming/backends/` (`lite`, the CPU
    animator; `infinitetalk`, the real model).

    Optional capabilities are the protocols below, checked with isinstance by the engine:
    `ContinuingGenerator` (continue from the frames shown), `BatchingGenerator` (several sessions'
    windows in one pass), `AdaptiveQualityGenerator` (steps and sizes the engine may turn down) and
    `ClosingGenerator` (release held resources at shutdown).

    Threading: all methods are called from the engine's single worker thread, never concurrently,
    so a backend may keep mutable state (GPU buffers, caches) without locks.
    """

    name: str
    """Short id used in logs, metrics and the UI: "lite", "infinitetalk"."""

    description: str
    """One line for humans, e.g. "lite: CPU portrait animator (not InfiniteTalk)"."""

    window: WindowSpec

    def output_size(self, avatar: Avatar) -> tuple[int, int]:
        """(width, height) of the frames this backend makes for `avatar`."""
        ...

    def open_session(self, session_id: str, avatar: Avatar, speakers: int = 1) -> Any:
        """Prepare per-session state (encode the reference image, ...). Returned value is opaque."""
        ...

    def generate(self, state: Any, job: WindowJob) -> Iterator[np.ndarray]:
        """Yield exactly `window.new_frames` RGB uint8 frames [H, W, 3] for the job, in order."""
        ...

    def close_session(self, state: Any) -> None:
        """Release per-session state."""
        ...


@dataclass(frozen=True)
class QualityRange:
    """What a backend lets the engine turn down when it falls behind real time.

    steps: the configured sampling steps (the top); min_steps: the fewest allowed.
    step_choices: the step counts it can run, ascending (e.g. (2, 4) for a distilled schedule);
        empty: every count from min_steps to steps.
    sizes: generation sizes (height, width) it can switch between at a window boundary, largest
        (the configured one) first; frames are always delivered at `output_size` whatever the size.
    """

    steps: int
    min_steps: int
    sizes: tuple[tuple[int, int], ...] = ()
    step_choices: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.min_steps <= self.steps:
            raise ValueError(f"min_steps must be in 1..{self.steps}, got {self.min_steps}")
        if self.step_choices and (self.steps not in self.step_choices
                                  or list(self.step_choices) != sorted(set(self.step_choices))):
            raise ValueError(f"step_choices must be ascending and include steps={self.steps}, got {self.step_choices}")

    def choices(self) -> tuple[int, ...]:
        """Step counts allowed, ascending, from min_steps to steps."""
        every = self.step_choices or tuple(range(1, self.steps + 1))
        return tuple(c for c in every if self.min_steps <= c <= self.steps)


CONTINUE_FROM = "continue_from"
"""`WindowJob.extras` key: uint8 [n, H, W, 3], the last frames shown before this window (output size)."""
FRAMES_CUT = "frames_cut"
"""`WindowJob.extras` key: how many made frames were dropped unseen before this window, so a backend
that follows a source video can keep it in step with what is shown."""


@runtime_checkable
class ContinuingGenerator(Generator, Protocol):
    """Optional extension: a backend whose next window can continue from frames it did not make last.

    When speech starts, the idle frames already queued would play before it (up to a window of extra
    latency). The engine drops the ones the viewer has not seen yet and passes the last frames that
    will be shown as `job.extras[CONTINUE_FROM]`, so the speech window continues from what was seen.
    """

    continue_frames: int
    """How many of the last shown frames the backend continues from (its motion frames)."""


@runtime_checkable
class SegmentFeaturesGenerator(Generator, Protocol):
    """Optional extension: with generated speech, a backend that computes speech features over each
    segment's known audio as the reference does over a whole clip (`streaming/segment_clips.py`:
    the clips come in `job.extras["segment_clips"]`). 0 frames: not for this configuration."""

    segment_clip_frames: int
    """The longest clip it computes in one piece (a longer segment comes as blocks of this length)."""

    segment_reach_frames: int
    """How many frames before a window's first new frame its features read (motion frames + audio window)."""


@runtime_checkable
class BatchingGenerator(Generator, Protocol):
    """Optional extension: a backend that makes the windows of several sessions in one batched pass.

    The worker groups queued jobs whose `batch_key` is equal (and not None), prepares each on its own
    (an error there fails only that job), then runs them together. A backend without these methods is
    served one job at a time.
    """

    max_batch: int
    """Most windows run together (1 disables batching)."""

    def batch_key(self, state: Any, job: WindowJob) -> Hashable | None:
        """Jobs with equal keys can share a pass (same shape and settings); None: run this one alone."""
        ...

    def prepare_window(self, state: Any, job: WindowJob) -> Any:
        """Per-job work before the shared pass (features, noise, condition); returns an opaque work item."""
        ...

    def generate_batch(self, works: Sequence[Any]) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (position in `works`, frame) until every work has had its `window.new_frames` frames,
        each work's frames in order."""
        ...


@runtime_checkable
class AdaptiveQualityGenerator(Generator, Protocol):
    """Optional extension: a backend that can run a window with fewer steps or at a smaller size
    (`WindowJob.extras` "steps" and "size") when its session falls behind real time."""

    def quality_range(self, avatar: Avatar) -> QualityRange | None:
        """What may be turned down for sessions of `avatar` (None: nothing)."""
        ...


@runtime_checkable
class ClosingGenerator(Generator, Protocol):
    """Optional extension: a backend holding resources beyond its sessions (e.g. the follower processes
    of a model split over GPUs), released when the engine shuts down."""

    def close(self) -> None:
        """Release them; called once, on the worker thread, after every session closed."""
        ...
