"""A test backend that writes, into each frame, a fingerprint of the audio it was given.

It lets engine tests check A/V pairing exactly: the pixel row 0 of frame i encodes the job's
window index and the frame's position, and pixel value (1,0) the frame's audio energy, so a test
can verify that every emitted frame travels with the audio it was made from. It is a test double
for the engine's unit tests only (the engine is what is under test here).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np

from streaming.generator import Avatar, WindowJob, WindowSpec


def audio_code(audio: np.ndarray) -> int:
    """A fingerprint (0..255) of a frame's audio, robust to float32 round trips."""
    return int(np.round(np.abs(audio).sum() * 997.0)) % 251 + 1 if np.any(audio) else 0


class PatternGenerator:
    name = "pattern"
    description = "pattern: test backend (fingerprints audio into frames)"

    def __init__(self, new_frames: int = 4, size: tuple[int, int] = (32, 24), delay_s: float = 0.0,
                 context_frames: int = 0, lookahead_frames: int = 0, fail_on_window: int | None = None,
                 continue_frames: int = 0) -> None:
        self.window = WindowSpec(new_frames=new_frames, context_frames=context_frames, lookahead_frames=lookahead_frames)
        if continue_frames:  # a ContinuingGenerator: speech may cut queued idle frames
            self.continue_frames = continue_frames
        self.size = size
        self.delay_s = delay_s
        self.fail_on_window = fail_on_window
        self.opened: list[str] = []
        self.closed: list[str] = []
        self.jobs: list[WindowJob] = []
        self.threads: set[str] = set()

    def output_size(self, avatar: Avatar) -> tuple[int, int]:
        return self.size

    def open_session(self, session_id: str, avatar: Avatar, speakers: int = 1) -> dict:
        self.threads.add(threading.current_thread().name)
        self.opened.append(session_id)
        return {"id": session_id, "speakers": speakers}

    def generate(self, state: dict, job: WindowJob) -> Iterator[np.ndarray]:
        self.threads.add(threading.current_thread().name)
        self.jobs.append(job)
        if self.fail_on_window is not None and job.index == self.fail_on_window:
            raise RuntimeError("simulated CUDA out of memory")
        spec = self.window
        spf = spec.samples_per_frame
        start = spec.context_frames * spf
        mixed = np.clip(job.audio.sum(axis=0), -1, 1)
        w, h = self.size
        for i in range(spec.new_frames):
            if self.delay_s:
                time.sleep(self.delay_s / spec.new_frames)
            img = np.zeros((h, w, 3), np.uint8)
            img[0, 0] = (job.index % 256, i, 255 if job.speech else 0)
            img[1, 0, 0] = audio_code(mixed[start + i * spf : start + (i + 1) * spf])
            yield img

    def close_session(self, state: dict) -> None:
        self.closed.append(state["id"])
