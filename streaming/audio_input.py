"""Audio in at any rate, channel count and sample format -> 16 kHz mono float32, via PyAV's resampler.

Clients send whatever their microphone gives (WebRTC: 48 kHz stereo s16; websocket: PCM16 at a
declared rate). Everything inside the engine is 16 kHz mono float32, so conversion happens once,
here, at the edge of a session.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import av
import numpy as np

from .generator import SAMPLE_RATE

log = logging.getLogger(__name__)

SUPPORTED_FORMATS = {"s16": np.int16, "s32": np.int32, "flt": np.float32, "fltp": np.float32, "s16p": np.int16}
MIN_RATE, MAX_RATE = 8_000, 192_000
MAX_CHANNELS = 8


class AudioFormatError(ValueError):
    """The declared or actual audio format cannot be used; the message says what is accepted."""


@dataclass(frozen=True)
class PcmFormat:
    """How raw PCM bytes from a client are laid out (interleaved when channels > 1)."""

    sample_rate: int = SAMPLE_RATE
    channels: int = 1
    sample_format: str = "s16"

    def __post_init__(self) -> None:
        if not isinstance(self.sample_rate, int) or not MIN_RATE <= self.sample_rate <= MAX_RATE:
            raise AudioFormatError(
                f"sample rate {self.sample_rate!r} not supported: use an integer from {MIN_RATE} to {MAX_RATE} Hz"
            )
        if not isinstance(self.channels, int) or not 1 <= self.channels <= MAX_CHANNELS:
            raise AudioFormatError(f"channels {self.channels!r} not supported: use 1 to {MAX_CHANNELS}")
        if self.sample_format not in ("s16", "s32", "flt"):
            raise AudioFormatError(
                f"sample format {self.sample_format!r} not supported: use 's16', 's32' or 'flt' (interleaved)"
            )

    @property
    def bytes_per_frame(self) -> int:
        return np.dtype(SUPPORTED_FORMATS[self.sample_format]).itemsize * self.channels


def _to_mono_float_frame(frame: av.AudioFrame, channels: int) -> av.AudioFrame:
    """Average the channels into one float channel (a plain downmix would add them and can clip)."""
    arr = frame.to_ndarray()
    if frame.format.is_planar:
        data = arr.reshape(channels, -1)
    else:
        data = arr.reshape(-1, channels).T
    if np.issubdtype(data.dtype, np.integer):
        data = data.astype(np.float32) / float(np.iinfo(data.dtype).max + 1)
    mono = data.astype(np.float32).mean(axis=0, keepdims=True)
    out = av.AudioFrame.from_ndarray(np.ascontiguousarray(mono), format="flt", layout="mono")
    out.sample_rate = frame.sample_rate
    return out


def _layout_name(channels: int) -> str:
    return {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")


class AudioConverter:
    """Converts a stream of chunks (raw PCM bytes, numpy arrays or `av.AudioFrame`s) to 16 kHz mono float32.

    The resampler keeps a few samples of filter state between chunks; `flush()` returns them at the
    end of a stream so no sample is lost.
    """

    def __init__(self) -> None:
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        self._leftover = b""
        self._input_key: tuple | None = None
        self._pending_flush = np.zeros(0, np.float32)

    def _check_stream_format(self, key: tuple) -> None:
        # PyAV's resampler is configured by the first frame it sees; a format change mid-stream
        # needs a fresh resampler (flushing the old one first so nothing is dropped).
        if self._input_key is not None and key != self._input_key:
            log.info("audio input format changed %s -> %s; restarting resampler", self._input_key, key)
            self._pending_flush = self._drain(self._resampler.resample(None))
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        else:
            self._pending_flush = np.zeros(0, np.float32)
        self._input_key = key

    @staticmethod
    def _drain(frames: list[av.AudioFrame]) -> np.ndarray:
        if not frames:
            return np.zeros(0, np.float32)
        return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32, copy=False)

    def convert_frame(self, frame: av.AudioFrame) -> np.ndarray:
        """Convert one decoded audio frame (e.g. from aiortc) to 16 kHz mono float32."""
        channels = len(frame.layout.channels)
        if channels > 1 or frame.format.name != "flt":
            frame = _to_mono_float_frame(frame, channels)
        key = (frame.sample_rate,)
        self._check_stream_format(key)
        frame.pts = None  # timestamps are ours; the resampler must not try to fill gaps
        out = self._drain(self._resampler.resample(frame))
        return np.concatenate([self._pending_flush, out]) if self._pending_flush.size else out

    def convert_pcm(self, data: bytes, fmt: PcmFormat) -> np.ndarray:
        """Convert raw interleaved PCM bytes; a partial trailing sample frame is kept for the next call."""
        buf = self._leftover + bytes(data)
        usable = len(buf) - len(buf) % fmt.bytes_per_frame
        self._leftover = buf[usable:]
        if usable == 0:
            return np.zeros(0, np.float32)
        samples = np.frombuffer(buf[:usable], dtype=SUPPORTED_FORMATS[fmt.sample_format])
        return self.convert_array(samples.reshape(-1, fmt.channels), fmt.sample_rate)

    def convert_array(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        """Convert [n] or [n, channels] samples (int16, int32 or float32) at `sample_rate`."""
        if samples.ndim == 1:
            samples = samples[:, None]
        if samples.ndim != 2 or samples.shape[1] > MAX_CHANNELS:
            raise AudioFormatError(f"audio array must be [samples] or [samples, channels<=8], got {samples.shape}")
        fmt_name = {np.dtype(np.int16): "s16", np.dtype(np.int32): "s32", np.dtype(np.float32): "flt"}.get(samples.dtype)
        if fmt_name is None:
            raise AudioFormatError(f"audio dtype {samples.dtype} not supported: use int16, int32 or float32")
        PcmFormat(sample_rate, samples.shape[1], fmt_name)  # validates the rate and channel count
        if samples.shape[0] == 0:
            return np.zeros(0, np.float32)
        packed = np.ascontiguousarray(samples).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(packed, format=fmt_name, layout=_layout_name(samples.shape[1]))
        frame.sample_rate = sample_rate
        return self.convert_frame(frame)

    def flush(self) -> np.ndarray:
        """End of stream: return the samples still inside the resampler."""
        self._leftover = b""
        out = self._drain(self._resampler.resample(None))
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        self._input_key = None
        return out
