"""`LiteGenerator`: the CPU portrait animator behind the `Generator` protocol (not InfiniteTalk).

It animates the avatar image itself: the jaw opens with the loudness of each frame's audio, the
lips widen or round with its spectrum, the eyes blink on a random schedule and the head sways.
No model, no GPU: a 512x512 frame takes a few milliseconds on one core, so the server can run
anywhere. Output framing: the avatar is cropped to the output's aspect ratio around the face
(a square image for a square output is kept whole), then resized to `LiteSettings` width x height.
Video avatars loop at their own frame rate, resampled to the output rate; the face is detected
once on the first frame and the same geometry is used on every frame (fine for the usual
"person sitting still" idle loops, wrong if the head travels far in the clip).
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from streaming.backends.lite.audio_features import MouthDriver, frame_features
from streaming.backends.lite.face import (
    FaceGeometry,
    crop_box_for,
    detect_face_box,
    face_geometry,
    frame_to_output,
    map_box,
)
from streaming.backends.lite.motion import BlinkSchedule, HeadSway
from streaming.backends.lite.render import EyeRig, HeadRig, MouthRig, Pose
from streaming.backends.lite.settings import LiteSettings
from streaming.generator import SAMPLE_RATE, Avatar, WindowJob, WindowSpec

log = logging.getLogger(__name__)


@dataclass
class _FaceState:
    geom: FaceGeometry
    mouth: MouthRig
    eyes: list[EyeRig]
    driver: MouthDriver
    blinks: BlinkSchedule
    sway: HeadSway
    channel: int | None
    """Row of `job.audio` that drives this face; None = the sum of all rows."""


@dataclass
class LiteSession:
    """Per-session state of the lite backend (opaque to the engine)."""

    session_id: str
    avatar_name: str
    frames: np.ndarray
    """Source frames at output size, uint8 [N, H, W, 3]."""
    source_fps: float
    speakers: int
    faces: list[_FaceState]
    head: HeadRig
    frames_made: int = 0


class LiteGenerator:
    """Lightweight CPU portrait animator implementing `streaming.generator.Generator`."""

    name = "lite"
    description = ("lite: lightweight CPU portrait animator (warps the avatar's mouth, eyes and head "
                   "from audio loudness and spectrum) - NOT the InfiniteTalk model")

    def __init__(self, settings: LiteSettings | None = None) -> None:
        self.settings = settings or LiteSettings()
        s = self.settings
        self.window = WindowSpec(new_frames=s.new_frames, fps=s.fps, context_frames=0,
                                 lookahead_frames=s.lookahead_frames)
        spf = self.window.samples_per_frame
        self._lead = int(np.clip(round(s.lead_ms * SAMPLE_RATE / 1000.0), 0, s.lookahead_frames * spf))
        log.info("%s; %dx%d at %d fps, %d frames per window, %d look-ahead", self.description,
                 s.width, s.height, s.fps, s.new_frames, s.lookahead_frames)

    def output_size(self, avatar: Avatar) -> tuple[int, int]:
        return self.settings.width, self.settings.height

    def open_session(self, session_id: str, avatar: Avatar, speakers: int = 1) -> LiteSession:
        """Crop/resize the avatar, find the face(s), precompute every warp grid for the session."""
        t0 = time.perf_counter()
        s = self.settings
        out = (s.width, s.height)
        first = avatar.frames[0]
        if avatar.speaker_boxes:
            boxes = list(avatar.speaker_boxes)
            box_xywh = [(x0, y0, x1 - x0, y1 - y0) for x0, y0, x1, y1 in boxes]
            xs = [b[0] for b in box_xywh] + [b[0] + b[2] for b in box_xywh]
            ys = [b[1] for b in box_xywh] + [b[1] + b[3] for b in box_xywh]
            union = (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))
            crop = crop_box_for(avatar.size, out, union)
            sources = ["given"] * len(box_xywh)
        else:
            box, src = detect_face_box(first)
            crop = crop_box_for(avatar.size, out, box)
            box_xywh, sources = [box], [src]
        frames = np.stack([frame_to_output(f, crop, out) for f in avatar.frames])
        geoms = [face_geometry(frames[0], map_box(b, crop, out), src) for b, src in zip(box_xywh, sources, strict=True)]
        rng = np.random.default_rng([s.seed, zlib.crc32(session_id.encode("utf-8"))])
        faces = []
        for i, g in enumerate(geoms):
            channel = i if (len(geoms) > 1 and i < speakers) else None
            faces.append(_FaceState(
                geom=g,
                mouth=MouthRig(g, s.width, s.height, s.mouth_open, s.width_gain),
                eyes=[EyeRig(cx, cy, size, s.width, s.height) for cx, cy, size in g.eyes],
                driver=MouthDriver(frame_seconds=1.0 / s.fps, level_range_db=s.level_range_db,
                                   gate_dbfs=s.gate_dbfs, attack_ms=s.attack_ms, release_ms=s.release_ms),
                blinks=BlinkSchedule(rng.spawn(1)[0], s.blink_interval_s, s.blink_duration_s),
                sway=HeadSway(rng.spawn(1)[0]),
                channel=channel,
            ))
        state = LiteSession(session_id=session_id, avatar_name=avatar.name, frames=frames,
                            source_fps=float(avatar.fps), speakers=speakers, faces=faces,
                            head=HeadRig(geoms, s.width, s.height))
        log.info("lite session %s: avatar %r (%d frame(s)) -> %dx%d, faces %s, ready in %.0f ms",
                 session_id, avatar.name, len(frames), s.width, s.height,
                 [(g.box, g.source) for g in geoms], 1000 * (time.perf_counter() - t0))
        return state

    def _check_job(self, state: LiteSession, job: WindowJob) -> np.ndarray:
        audio = np.asarray(job.audio, dtype=np.float32)
        if audio.ndim == 1:
            audio = audio[None, :]
        want = self.window.job_samples
        if audio.ndim != 2 or audio.shape[1] != want:
            raise ValueError(f"lite: job {job.index} of session {job.session_id} has audio {list(audio.shape)}; "
                             f"expected [speakers, {want}] (context + window + look-ahead samples)")
        return audio

    def generate(self, state: LiteSession, job: WindowJob) -> Iterator[np.ndarray]:
        """Yield `window.new_frames` RGB uint8 [H, W, 3] frames; each owns 640 samples of the window."""
        audio = self._check_job(state, job)
        s, spec = self.settings, self.window
        n, spf = spec.new_frames, spec.samples_per_frame
        starts = spec.context_frames * spf + np.arange(n) * spf + self._lead
        idx = job.first_frame + np.arange(n)
        t = idx / spec.fps
        scale = s.height / 512.0
        per_face = []
        for face in state.faces:
            mono = audio[face.channel] if face.channel is not None and face.channel < len(audio) else audio.sum(0)
            opening, width, loud = face.driver.step(frame_features(mono, starts, spf), job.speech)
            activity = np.clip(2.5 * loud, 0.0, 1.0)
            gain = 1.0 + (s.speech_sway_gain - 1.0) * activity
            unit = face.sway.pose(t, activity)  # [n, 3]
            poses = [Pose(float(s.sway_degrees * gain[i] * unit[i, 0]),
                          float(s.sway_pixels * scale * gain[i] * unit[i, 1]),
                          float(s.sway_pixels * scale * gain[i] * unit[i, 2]
                                + s.nod_pixels * scale * min(1.0, 2.0 * float(loud[i]))))
                     for i in range(n)]
            per_face.append((opening, width, face.blinks.amount(t), poses))
        nsrc = len(state.frames)
        for i in range(n):
            k = int(idx[i] * state.source_fps / spec.fps) % nsrc if nsrc > 1 else 0
            frame = state.frames[k].copy()
            for face, (opening, width, blink, _) in zip(state.faces, per_face, strict=True):
                face.mouth.apply(frame, float(opening[i]), float(width[i]))
                for eye in face.eyes:
                    eye.apply(frame, float(blink[i]))
            state.head.apply(frame, [p[3][i] for p in per_face])
            state.frames_made += 1
            yield frame

    def close_session(self, state: LiteSession) -> None:
        log.info("lite session %s closed after %d frames", state.session_id, state.frames_made)
        state.faces.clear()
        state.frames = state.frames[:0]
