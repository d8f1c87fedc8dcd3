"""`infinitetalk-live render`: speech files -> an mp4 of the avatar saying them, as fast as it can go.

It runs the same engine as a live session (same windows, same seed, same frames), only fed from
files and not paced, then writes H.264 + AAC with PyAV. A progress bar shows frames, windows, speed
and the time left.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from streaming.engine import Engine
from streaming.generator import SAMPLE_RATE, Avatar, Generator
from streaming.media_files import Mp4Writer, read_audio_file
from streaming.planner import PlannerSettings
from streaming.session import SessionSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RenderResult:
    frames: int
    windows: int
    seconds_of_video: float
    wall_seconds: float

    @property
    def realtime_factor(self) -> float:
        return self.seconds_of_video / self.wall_seconds if self.wall_seconds else float("inf")


def read_speech(paths: list[Path]) -> list[np.ndarray]:
    """Decode each speaker's file to 16 kHz mono float32; all padded to the longest."""
    tracks = [read_audio_file(p, SAMPLE_RATE).astype(np.float32) / 32768.0 for p in paths]
    if not tracks or max(t.size for t in tracks) == 0:
        raise ValueError("the audio files hold no samples")
    n = max(t.size for t in tracks)
    return [np.pad(t, (0, n - t.size)) for t in tracks]


def read_mask(mask_box: str | None, mask: Path | None, avatar: Avatar) -> np.ndarray:
    """--mask-box X0,Y0,X1,Y1 or --mask IMAGE -> float [H, W] in [0, 1] on the source (1 = regenerate)."""
    from PIL import Image

    w, h = avatar.size
    if mask_box:
        try:
            x0, y0, x1, y1 = (int(v) for v in mask_box.split(","))
        except ValueError:
            raise ValueError(f"--mask-box takes X0,Y0,X1,Y1, got {mask_box!r}") from None
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            raise ValueError(f"--mask-box {mask_box} is not inside the {w}x{h} source")
        m = np.zeros((h, w), np.float32)
        m[y0:y1, x0:x1] = 1.0
        return m
    if mask is None:
        raise ValueError("give --mask-box or --mask")
    with Image.open(mask) as img:
        gray = img.convert("L").resize((w, h), Image.BILINEAR)
    return np.asarray(gray, np.float32) / 255.0


def default_speaker_boxes(avatar: Avatar, speakers: int) -> tuple[tuple[int, int, int, int], ...]:
    """Without boxes, speakers split the frame into equal vertical strips, left to right."""
    w, h = avatar.size
    return tuple((w * i // speakers, 0, w * (i + 1) // speakers, h) for i in range(speakers))


async def render_to_mp4(
    generator: Generator,
    avatar: Avatar,
    speech: list[np.ndarray],
    output: Path,
    progress: bool = True,
    crf: int = 23,
) -> RenderResult:
    """Render `speech` (one array per speaker) with `avatar` to `output`; returns counts and timing."""
    speakers = len(speech)
    if speakers > 1 and not avatar.speaker_boxes:
        avatar = replace(avatar, speaker_boxes=default_speaker_boxes(avatar, speakers))
    samples = speech[0].size
    spf = generator.window.samples_per_frame
    frames_wanted = math.ceil(samples / spf)
    windows_wanted = math.ceil(frames_wanted / generator.window.new_frames)
    settings = SessionSettings(
        speakers=speakers, planner=PlannerSettings(realtime=False), max_buffer_s=samples / SAMPLE_RATE + 10
    )
    engine = Engine(generator)
    writer = Mp4Writer(output, fps=generator.window.fps, audio_rate=SAMPLE_RATE, crf=crf)
    t0 = time.perf_counter()
    written = 0
    bar = tqdm(total=frames_wanted, unit="frame", disable=not progress, file=sys.stderr, dynamic_ncols=True,
               desc=f"render {output.name}")
    try:
        session = await engine.open_session(avatar, settings)
        for s, track in enumerate(speech):
            session.push_audio(track, speaker=s)
        session.end_input()
        async for frame in session.frames():
            if written >= frames_wanted:
                continue  # the last window's padding beyond the speech
            writer.video(frame.index, frame.image)
            pcm = np.round(np.clip(frame.audio, -1.0, 1.0) * 32767.0).astype(np.int16)
            writer.audio(pcm, SAMPLE_RATE)
            written += 1
            bar.update(1)
            bar.set_postfix(windows=f"{frame.window + 1}/{windows_wanted}", refresh=False)
        if session.error is not None:
            raise RuntimeError(f"render failed: {session.error.message}")
        await session.close()
    finally:
        bar.close()
        writer.close()
        await engine.shutdown()
    wall = time.perf_counter() - t0
    result = RenderResult(written, windows_wanted, written / generator.window.fps, wall)
    log.info("rendered %s: %d frames (%.1f s of video) in %.1f s, %.2fx real time", output, written,
             result.seconds_of_video, wall, result.realtime_factor)
    return result
