"""Where the client's speech comes from: an audio file (decoded with PyAV) or the microphone.

Both give PCM16 chunks of `chunk_ms` at a known rate, paced like a live microphone so the server
sees real-time speech. The microphone needs PortAudio through `sounddevice`; it is imported only
when a microphone is asked for, so file streaming works on machines without audio hardware.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

import numpy as np

from model.timebase import SAMPLE_RATE
from streaming.media_files import read_audio_file

log = logging.getLogger(__name__)

DEFAULT_RATE = SAMPLE_RATE
DEFAULT_CHUNK_MS = 20


class MicrophoneUnavailable(RuntimeError):
    """sounddevice or PortAudio is missing, or no input device works."""


class AudioSource(Protocol):
    """A mono PCM16 stream: `chunks()` yields int16 arrays [n] at `sample_rate`."""

    sample_rate: int

    def chunks(self) -> AsyncIterator[np.ndarray]: ...


class FileSource:
    """An audio file played as if spoken into a microphone (or as fast as allowed with `realtime=False`)."""

    def __init__(
        self,
        path: str | Path,
        sample_rate: int = DEFAULT_RATE,
        chunk_ms: int = DEFAULT_CHUNK_MS,
        realtime: bool = True,
        seconds: float | None = None,
    ) -> None:
        self.sample_rate = sample_rate
        self.samples = read_audio_file(path, sample_rate)
        if seconds is not None:
            self.samples = self.samples[: int(seconds * sample_rate)]
        self.chunk = max(1, sample_rate * chunk_ms // 1000)
        self.realtime = realtime
        self.path = Path(path)

    @property
    def duration_s(self) -> float:
        return self.samples.size / self.sample_rate

    async def chunks(self) -> AsyncIterator[np.ndarray]:
        t0 = time.monotonic()
        for k, start in enumerate(range(0, self.samples.size, self.chunk)):
            if self.realtime:
                delay = t0 + k * self.chunk / self.sample_rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)
            yield self.samples[start : start + self.chunk]


def _import_sounddevice():  # noqa: ANN202 - the module type is only known at run time
    try:
        import sounddevice
    except ImportError as exc:
        raise MicrophoneUnavailable(
            "the microphone needs the 'sounddevice' package: pip install sounddevice "
            "(or stream a file instead: --input speech.wav)"
        ) from exc
    except OSError as exc:  # sounddevice raises OSError when libportaudio is absent
        raise MicrophoneUnavailable(
            f"the microphone needs the PortAudio library ({exc}): install it "
            "(Debian/Ubuntu: apt-get install libportaudio2; macOS: brew install portaudio) "
            "or stream a file instead: --input speech.wav"
        ) from exc
    return sounddevice


class MicSource:
    """The default input device, mono PCM16, in `chunk_ms` blocks (runs until cancelled or `seconds`)."""

    def __init__(
        self,
        sample_rate: int | None = None,
        chunk_ms: int = DEFAULT_CHUNK_MS,
        device: int | str | None = None,
        seconds: float | None = None,
    ) -> None:
        self._sd = _import_sounddevice()
        try:
            info = self._sd.query_devices(device, "input")
        except Exception as exc:  # noqa: BLE001 - PortAudio errors have several types
            raise MicrophoneUnavailable(f"no usable audio input device ({exc}); pick one with --device") from exc
        self.sample_rate = int(sample_rate or info["default_samplerate"])
        self.device = device
        self.chunk = max(1, self.sample_rate * chunk_ms // 1000)
        self.seconds = seconds

    async def chunks(self) -> AsyncIterator[np.ndarray]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[np.ndarray] = asyncio.Queue(maxsize=500)

        def on_audio(indata: np.ndarray, frames: int, time_info: object, status: object) -> None:
            if status:
                log.warning("microphone: %s", status)
            block = indata[:, 0].copy()
            loop.call_soon_threadsafe(lambda: queue.full() or queue.put_nowait(block))

        stream = self._sd.InputStream(
            samplerate=self.sample_rate, channels=1, dtype="int16", blocksize=self.chunk,
            device=self.device, callback=on_audio,
        )
        limit = None if self.seconds is None else int(self.seconds * self.sample_rate)
        sent = 0
        with stream:
            log.info("microphone open: %s at %d Hz", stream.device, self.sample_rate)
            while limit is None or sent < limit:
                block = await queue.get()
                sent += block.size
                yield block
