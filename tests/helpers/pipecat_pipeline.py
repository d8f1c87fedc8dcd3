"""A real pipecat pipeline around a processor: TTS frames from a WAV in, every frame out captured with its time."""

from __future__ import annotations

import time

import numpy as np
from pipecat.frames.frames import Frame, TTSAudioRawFrame, TTSStartedFrame, TTSStoppedFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from model.timebase import SAMPLE_RATE


class TimedSink(FrameProcessor):
    """Records (monotonic time, frame) of everything flowing downstream through it, and passes it on."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[tuple[float, Frame]] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM:
            self.frames.append((time.monotonic(), frame))
        await self.push_frame(frame, direction)

    def of_type(self, kind: type) -> list[tuple[float, Frame]]:
        return [(t, f) for t, f in self.frames if isinstance(f, kind)]


def tts_frames(pcm: np.ndarray, chunk_s: float = 0.1) -> list[Frame]:
    """One TTS utterance as a TTS service pushes it: started, audio chunks (16 kHz mono PCM16), stopped."""
    step = int(chunk_s * SAMPLE_RATE)
    audio = [TTSAudioRawFrame(audio=pcm[i : i + step].tobytes(), sample_rate=SAMPLE_RATE, num_channels=1)
             for i in range(0, pcm.size, step)]
    return [TTSStartedFrame(), *audio, TTSStoppedFrame()]
