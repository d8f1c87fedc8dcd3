"""aiortc tracks fed from one engine session: the avatar video and the speech it was made from.

One consumer task (`FramePump`) iterates `session.frames()` and hands each frame's image to the
video track and its audio to the audio track, so both come from the very same `OutputFrame`.
Video pts = global frame index * 3600 (90 kHz clock, 25 fps). The audio track paces itself by the
wall clock in 20 ms chunks with continuous pts and sends silence whenever no frame audio is
there (before the first frame, while the session restarts for an avatar switch, after it ends),
so RTP timing never breaks.

Audio/video alignment: when the first frame arrives, the frame timeline is anchored to the next
audio chunk that is due a little in the future; frame g's audio then occupies chunks
anchor + 2 * (g - g0) and + 1, so each frame's sound leaves within ~25 ms of its image. Audio that
arrives after its chunk was sent is dropped (the image it belongs to was already sent); a frame
more than `reanchor_s` late (the pacer reset its clock) re-anchors the timeline.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import math
import time
from collections import deque
from collections.abc import Callable

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, VideoFrame

from streaming.generator import SAMPLE_RATE
from streaming.output import OutputFrame
from streaming.session import Session

log = logging.getLogger(__name__)

VIDEO_CLOCK = 90_000
AUDIO_CHUNK = SAMPLE_RATE // 50  # 20 ms
AUDIO_CHUNK_S = AUDIO_CHUNK / SAMPLE_RATE


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """float32 [-1, 1] -> int16 (x * 32768, rounded, clipped): exact inverse of the engine's s16 input."""
    return np.clip(np.rint(np.asarray(audio, np.float32) * 32768.0), -32768, 32767).astype(np.int16)


class AvatarVideoTrack(MediaStreamTrack):
    """Video out: the session's frames as they are paced, pts = global index * (90000 / fps).

    Up to `max_queue` frames (200 ms) wait for a sender that fell behind (a CPU hiccup) and then
    leave back to back; beyond that the oldest are dropped (counted), so video never lags for long.
    """

    kind = "video"

    def __init__(self, fps: int, max_queue: int = 5) -> None:
        super().__init__()
        self.fps = fps
        self._ticks = VIDEO_CLOCK // fps
        self._queue: deque[tuple[int, np.ndarray]] = deque()
        self._max_queue = max_queue
        self._ready = asyncio.Event()
        self.started = False
        self.frames_sent = 0
        self.dropped = 0

    def offer(self, index: int, image: np.ndarray) -> None:
        """Called by the pump for every frame; frames are dropped until the sender starts reading."""
        if not self.started or self.readyState != "live":
            return
        self._queue.append((index, image))
        while len(self._queue) > self._max_queue:
            self._queue.popleft()
            self.dropped += 1
        self._ready.set()

    async def recv(self) -> VideoFrame:
        self.started = True
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        if self.readyState != "live":
            raise MediaStreamError
        index, image = self._queue.popleft()
        frame = VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = index * self._ticks
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.frames_sent += 1
        return frame

    def stop(self) -> None:
        super().stop()
        self._ready.set()


class SpeechAudioTrack(MediaStreamTrack):
    """Audio out: 20 ms 16 kHz s16 mono frames, continuous pts, silence when no frame audio is due."""

    kind = "audio"

    def __init__(
        self,
        samples_per_frame: int,
        grace_s: float = 0.02,
        lead_s: float = 0.005,
        reanchor_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        if samples_per_frame % AUDIO_CHUNK:
            raise ValueError(f"samples_per_frame {samples_per_frame} is not a multiple of {AUDIO_CHUNK} (20 ms)")
        self.chunks_per_frame = samples_per_frame // AUDIO_CHUNK
        self.grace_s = grace_s
        self.lead_s = lead_s
        self.reanchor_chunks = max(1, round(reanchor_s / AUDIO_CHUNK_S))
        self.clock = clock
        self._t0: float | None = None
        self._n = 0  # next chunk to send
        self._anchor: tuple[int, int] | None = None  # (frame index, chunk index)
        self._chunks: dict[int, np.ndarray] = {}
        self._arrived = asyncio.Event()
        self.silent_chunks = 0
        self.late_chunks = 0
        self.reanchors = 0

    def _due(self, n: int) -> float:
        assert self._t0 is not None
        return self._t0 + n * AUDIO_CHUNK_S

    def reset_anchor(self) -> None:
        """The frame timeline restarts (new session): the next frame anchors afresh."""
        self._anchor = None
        self._chunks.clear()

    def offer(self, index: int, audio: np.ndarray) -> None:
        """Frame `index`'s audio (float32 [samples_per_frame]); ignored until the sender starts reading."""
        if self._t0 is None or self.readyState != "live":
            return
        if self._anchor is not None:
            c = self._anchor[1] + (index - self._anchor[0]) * self.chunks_per_frame
            if c < self._n - self.reanchor_chunks or c > self._n + 50 * self.chunks_per_frame:
                self.reanchors += 1
                self.reset_anchor()
        if self._anchor is None:
            ahead = (self.clock() + self.lead_s - self._t0) / AUDIO_CHUNK_S
            self._anchor = (index, max(self._n, math.ceil(ahead)))
        c = self._anchor[1] + (index - self._anchor[0]) * self.chunks_per_frame
        pcm = to_pcm16(audio)
        for k in range(self.chunks_per_frame):
            if c + k < self._n:
                self.late_chunks += 1
                continue
            self._chunks[c + k] = pcm[k * AUDIO_CHUNK : (k + 1) * AUDIO_CHUNK]
        self._arrived.set()

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._t0 is None:
            self._t0 = self.clock()
        n = self._n
        wait = self._due(n) - self.clock()
        if wait > 0:
            await asyncio.sleep(wait)
        if self._anchor is not None and n not in self._chunks:
            deadline = self._due(n) + self.grace_s
            while n not in self._chunks and self.readyState == "live" and self._anchor is not None:
                left = deadline - self.clock()
                if left <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except asyncio.TimeoutError:
                    break
        if self.readyState != "live":
            raise MediaStreamError
        chunk = self._chunks.pop(n, None)
        if chunk is None:
            chunk = np.zeros(AUDIO_CHUNK, np.int16)
            if self._anchor is not None:
                self.silent_chunks += 1
        self._n = n + 1
        frame = AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = n * AUDIO_CHUNK
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        return frame

    def stop(self) -> None:
        super().stop()
        self._arrived.set()


class FramePump:
    """The one consumer of a session's frames, feeding both tracks; can swap sessions (avatar switch).

    on_frame(frame) is called for each frame (metrics); on_end(session) when a session's frames
    stop on their own (the session closed or failed), not when the pump swaps or stops it.
    """

    def __init__(
        self,
        session: Session,
        video: AvatarVideoTrack,
        audio: SpeechAudioTrack,
        on_frame: Callable[[OutputFrame], None] | None = None,
        on_end: Callable[[Session], None] | None = None,
    ) -> None:
        self.session = session
        self.video = video
        self.audio = audio
        self.on_frame = on_frame
        self.on_end = on_end
        self.frames = 0  # global index of the next frame
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(self.session), name=f"pump-{self.session.id}")

    async def _run(self, session: Session) -> None:
        async for frame in session.frames():
            g = self.frames
            self.frames += 1
            self.video.offer(g, frame.image)
            self.audio.offer(g, frame.audio)
            if self.on_frame is not None:
                self.on_frame(frame)
        if self.on_end is not None:
            self.on_end(session)

    async def swap(self, session: Session) -> Session:
        """Feed the tracks from `session` from now on; returns the previous session (still open)."""
        await self.stop()
        old, self.session = self.session, session
        self.audio.reset_anchor()
        self.start()
        return old

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
