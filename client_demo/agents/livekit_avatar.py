"""A LiveKit Agents (1.x) avatar worker driven by this server (docs/agents.md).

LiveKit's avatar protocol: the agent sends its TTS audio to the avatar participant over a byte
stream (`DataStreamAudioOutput`, topic `lk.audio_stream`; RPCs `lk.clear_buffer` and
`lk.playback_finished`); the avatar worker joins the room with a token carrying
`lk.publish_on_behalf`, receives that audio with `DataStreamAudioReceiver`, and publishes video and
audio through `AvatarRunner`, which takes them from a `VideoGenerator`. Here the `VideoGenerator`
is a client of this server (`AvatarLink`, generated speech over the websocket protocol): audio
frames in (resampled to 16 kHz by LiveKit's own resampler), `rtc.VideoFrame` at 25 fps out, each
followed by its `rtc.AudioFrame` while the avatar says something (idle frames are video only, so
the runner's playback position counts speech), and `AudioSegmentEnd` when the server reports the
segment played. `clear_buffer` interrupts the server and drops what is left of the segment.

`run_avatar_worker` is the room part, kept thin: no LiveKit server can run on the machines this
project is tested on, so everything below the room is tested and the room itself is not.
Needs the `agents` extra.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from livekit import rtc
from livekit.agents.voice.avatar import (
    AudioSegmentEnd,
    AvatarOptions,
    AvatarRunner,
    DataStreamAudioReceiver,
    VideoGenerator,
)

from model.timebase import SAMPLE_RATE, VIDEO_FPS

from .avatar_link import AvatarFrame, AvatarLink

log = logging.getLogger(__name__)


class InfiniteTalkVideoGenerator(VideoGenerator):
    """See the module docstring. `await start()` opens the server session before the runner starts."""

    def __init__(self, server_url: str, avatar: str | None = None, token: str | None = None,
                 jpeg_quality: int = 80) -> None:
        self.link = AvatarLink(server_url, avatar, token, SAMPLE_RATE, jpeg_quality)
        self._resampler: rtc.AudioResampler | None = None
        self._resampler_rate = 0
        self._in_segment = False
        self._discarding = False  # after clear_buffer, until the server says where playback stopped
        self.playback_events: list[dict[str, Any]] = []

    async def start(self) -> dict[str, Any]:
        """Open the server session; returns its `ready` (frame size for `AvatarOptions`)."""
        return await self.link.open()

    def options(self) -> AvatarOptions:
        """The runner's options: the server's frame size, 25 fps, 16 kHz mono audio."""
        ready = self.link.ready
        return AvatarOptions(video_width=ready["width"], video_height=ready["height"], video_fps=VIDEO_FPS,
                             audio_sample_rate=SAMPLE_RATE, audio_channels=1)

    async def push_audio(self, frame: rtc.AudioFrame | AudioSegmentEnd) -> None:
        if isinstance(frame, AudioSegmentEnd):
            await self._flush_resampler()
            if self._in_segment:
                self._in_segment = False
                await self.link.end_segment()
            return
        self._in_segment = True
        self._discarding = False
        for mono in self._to_16k(frame):
            await self.link.send_audio(bytes(mono.data.cast("b")))

    def _to_16k(self, frame: rtc.AudioFrame) -> list[rtc.AudioFrame]:
        if frame.sample_rate == SAMPLE_RATE and frame.num_channels == 1:
            return [frame]
        if self._resampler is None or self._resampler_rate != frame.sample_rate:
            self._resampler = rtc.AudioResampler(frame.sample_rate, SAMPLE_RATE, num_channels=frame.num_channels)
            self._resampler_rate = frame.sample_rate
        out = self._resampler.push(frame)
        return [f if f.num_channels == 1 else _mono(f) for f in out]

    async def _flush_resampler(self) -> None:
        if self._resampler is not None:
            for f in self._resampler.flush():
                await self.link.send_audio(bytes((f if f.num_channels == 1 else _mono(f)).data.cast("b")))
            self._resampler = None

    async def clear_buffer(self) -> None:
        """Barge-in: the server drops the rest of the segment; frames of it still on the wire are dropped here."""
        self._resampler = None
        self._in_segment = False
        self._discarding = True
        await self.link.interrupt()

    async def __aiter__(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:  # type: ignore[override]
        async for item in self.link.receive():
            if isinstance(item, AvatarFrame):
                if self._discarding and item.carries_input:
                    continue
                yield video_frame(item)
                if item.carries_input:
                    yield audio_frame(item)
                continue
            self.playback_events.append(item)
            if item["type"] == "playback_finished":
                if item["interrupted"]:
                    self._discarding = False  # the runner reported the interruption itself
                else:
                    yield AudioSegmentEnd()

    async def aclose(self) -> None:
        await self.link.close()


def video_frame(frame: AvatarFrame) -> rtc.VideoFrame:
    h, w = frame.image.shape[:2]
    return rtc.VideoFrame(w, h, rtc.VideoBufferType.RGB24, frame.image.tobytes())


def audio_frame(frame: AvatarFrame) -> rtc.AudioFrame:
    return rtc.AudioFrame(frame.pcm.tobytes(), SAMPLE_RATE, 1, frame.pcm.size)


def _mono(frame: rtc.AudioFrame) -> rtc.AudioFrame:
    import numpy as np

    x = np.frombuffer(frame.data, np.int16).reshape(-1, frame.num_channels).mean(axis=1)
    return rtc.AudioFrame(x.astype(np.int16).tobytes(), frame.sample_rate, 1, x.size)


async def run_avatar_worker(livekit_url: str, token: str, server_url: str, avatar: str | None = None) -> None:
    """Join the room as the avatar (the token carries `lk.publish_on_behalf`), open a session on this
    server, and publish the avatar until the room ends. The room part: untested here (no LiveKit server)."""
    generator = InfiniteTalkVideoGenerator(server_url, avatar)
    await generator.start()
    room = rtc.Room()
    try:
        await room.connect(livekit_url, token)
        runner = AvatarRunner(room, audio_recv=DataStreamAudioReceiver(room), video_gen=generator,
                              options=generator.options())
        await runner.start()
        try:
            await runner.wait_for_complete()
        finally:
            await runner.aclose()
    finally:
        await generator.aclose()
        await room.disconnect()
        await asyncio.sleep(0)
