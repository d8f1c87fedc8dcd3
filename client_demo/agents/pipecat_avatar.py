"""A pipecat (1.x) video service: this server as the avatar of a pipecat voice agent (docs/agents.md).

Put it after the TTS service: it takes the TTS audio (`TTSAudioRawFrame`, consumed: the avatar's
audio replaces it), sends it to the server as generated speech (one segment per TTS utterance,
ended at `TTSStoppedFrame`), and pushes downstream, for every frame the server makes (25 fps), an
`OutputImageRawFrame` synchronised with audio followed by the `OutputAudioRawFrame` of that frame's
exact audio (16 kHz; the transport resamples; TTS audio at other rates is resampled to 16 kHz here,
one continuous resampling per utterance, flushed at its end), so a transport with video out shows the avatar
speaking in sync. Between utterances the avatar idles (its frames carry silence, which pipecat's
bot-speech detection ignores). `InterruptionFrame` and `UserStartedSpeakingFrame` interrupt the
server (the rest of the utterance is dropped there) and frames of the old utterance still on the
wire are discarded until the server reports where playback stopped. `StartFrame` opens the
session, `EndFrame` plays out what is buffered and closes it, `CancelFrame` closes it at once.

Needs the `agents` extra (`pip install 'infinitetalk-live[agents]'`); nothing else imports it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputImageRawFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
    UserStartedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.ai_service import AIService

from model.timebase import SAMPLE_RATE
from streaming.audio_input import AudioConverter, PcmFormat

from .avatar_link import AvatarFrame, AvatarLink, AvatarLinkError

END_TIMEOUT_S = 600.0  # EndFrame waits at most this long for the buffered speech to play out


class InfiniteTalkVideoService(AIService):
    """See the module docstring. url: the server's websocket, `ws://host:port/ws`."""

    def __init__(self, *, url: str, avatar: str | None = None, token: str | None = None,
                 jpeg_quality: int = 80, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._link = AvatarLink(url, avatar, token, SAMPLE_RATE, jpeg_quality)
        self._converter = AudioConverter()  # TTS audio at other rates -> 16 kHz, one stream per utterance
        self._converting = False
        self._receiver: asyncio.Task | None = None
        self._discarding = False  # after an interrupt, until the server says where playback stopped
        self._speaking = False  # a segment is open (TTS audio sent, no TTSStoppedFrame yet)
        self.frames_out = 0
        self.playback_events: list[dict[str, Any]] = []

    @property
    def avatar_link(self) -> AvatarLink:
        """The server session (its `ready` message, bytes received, the latest `buffer`)."""
        return self._link

    # ------------------------------------------------------------------ lifecycle
    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        try:
            await self._link.open()
        except (AvatarLinkError, OSError, asyncio.TimeoutError) as exc:
            await self.push_error(error_msg=f"could not open the avatar session: {exc}", exception=exc)
            return
        self._receiver = self.create_task(self._receive(), "infinitetalk-receive")

    async def stop(self, frame: EndFrame) -> None:
        """Play out what is buffered (frames keep flowing downstream meanwhile), then close."""
        await super().stop(frame)
        if self._receiver is not None and self._link.is_open:
            await self._link.end()
            try:
                await asyncio.wait_for(asyncio.shield(self._receiver), END_TIMEOUT_S)
            except asyncio.TimeoutError:
                pass
        await self._close()

    async def cancel(self, frame: CancelFrame) -> None:
        await super().cancel(frame)
        await self._close()

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._close()

    async def _close(self) -> None:
        receiver, self._receiver = self._receiver, None
        if receiver is not None:
            await self.cancel_task(receiver)
        await self._link.close()

    # ------------------------------------------------------------------ pipeline frames in
    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame):
            await self._send_tts(frame)
            return  # the avatar's frames carry this audio downstream, in sync with the video
        if isinstance(frame, TTSStoppedFrame):
            if self._speaking:
                self._speaking = False
                await self._link.send_audio(self._flush_converter())
                await self._link.end_segment()
        elif isinstance(frame, (InterruptionFrame, UserStartedSpeakingFrame)):
            await self._interrupt()
        await self.push_frame(frame, direction)

    async def _send_tts(self, frame: TTSAudioRawFrame) -> None:
        audio = frame.audio
        if frame.num_channels != 1:
            await self.push_error(error_msg=f"TTS audio must be mono, got {frame.num_channels} channels")
            return
        if frame.sample_rate != SAMPLE_RATE:
            self._converting = True
            audio = to_pcm16(self._converter.convert_pcm(audio, PcmFormat(frame.sample_rate, 1, "s16")))
        self._speaking = True
        self._discarding = False
        await self._link.send_audio(audio)

    async def _interrupt(self) -> None:
        if not self._link.is_open:
            return
        self._speaking = False
        self._discarding = True
        self._flush_converter()  # the rest of the utterance is dropped, its resampler tail too
        await self._link.interrupt()

    def _flush_converter(self) -> bytes:
        """End of an utterance: the resampler's last samples (PCM16), and a fresh stream for the next one."""
        if not self._converting:
            return b""
        self._converting = False
        return to_pcm16(self._converter.flush())

    # ------------------------------------------------------------------ avatar frames out
    async def _receive(self) -> None:
        try:
            async for item in self._link.receive():
                if isinstance(item, AvatarFrame):
                    await self._push_avatar_frame(item)
                    continue
                self.playback_events.append(item)
                if item["type"] == "playback_finished" and item["interrupted"]:
                    self._discarding = False
        except AvatarLinkError as exc:
            await self.push_error(error_msg=f"the avatar session failed: {exc}", exception=exc)

    async def _push_avatar_frame(self, frame: AvatarFrame) -> None:
        if self._discarding and frame.carries_input:
            return  # the rest of an interrupted utterance, already on the wire
        h, w = frame.image.shape[:2]
        image = OutputImageRawFrame(image=frame.image.tobytes(), size=(w, h), format="RGB")
        image.sync_with_audio = True  # shown when the audio before it has been played
        await self.push_frame(image)
        await self.push_frame(OutputAudioRawFrame(audio=frame.pcm.tobytes(), sample_rate=SAMPLE_RATE, num_channels=1))
        self.frames_out += 1


def to_pcm16(samples: np.ndarray) -> bytes:
    """float32 [-1, 1] -> PCM16 bytes (as the server rounds: `round(x * 32768)`, clipped)."""
    return np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16).tobytes()
