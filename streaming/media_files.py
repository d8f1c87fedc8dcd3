"""Media files: decode any audio file to 16 kHz mono, write frames + audio to an mp4 (PyAV).

Shared by the offline `render` command and the Python client, which both turn a stream of frames
with their exact audio into a file that plays in sync.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from model.timebase import SAMPLE_RATE, VIDEO_FPS

log = logging.getLogger(__name__)

DEFAULT_RATE = SAMPLE_RATE

def read_audio_file(path: str | Path, sample_rate: int = DEFAULT_RATE) -> np.ndarray:
    """Decode any audio file PyAV can read to mono int16 at `sample_rate`: [n]."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file {path} not found")
    resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
    parts: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise ValueError(f"{path} has no audio stream")
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray().reshape(-1))
    except av.error.FFmpegError as exc:
        raise ValueError(f"cannot decode {path} as audio: {exc}") from exc
    for out in resampler.resample(None):
        parts.append(out.to_ndarray().reshape(-1))
    return np.concatenate(parts).astype(np.int16) if parts else np.zeros(0, np.int16)


VIDEO_CODECS = ("libx264", "mpeg4")
AUDIO_CODEC = "aac"


def pick_video_codec() -> str:
    """H.264 (libx264) when this PyAV build has it, else MPEG-4 part 2, which every FFmpeg has."""
    for name in VIDEO_CODECS:
        try:
            av.codec.Codec(name, "w")
            return name
        except (av.error.FFmpegError, ValueError):
            continue
    raise RuntimeError(f"this PyAV build has none of the video encoders {VIDEO_CODECS}")


class Mp4Writer:
    """Writes the returned video + audio to an mp4.

    Both streams are added when the first video frame fixes the size (mp4 wants every stream
    before the first packet); audio arriving earlier waits. Audio of any rate/layout is resampled
    to `audio_rate` Hz with `audio_channels` channels.
    """

    def __init__(
        self, path: str | Path, fps: int = VIDEO_FPS, audio_rate: int = SAMPLE_RATE, audio_channels: int = 1,
        video_codec: str | None = None, crf: int = 23,
    ) -> None:
        if audio_channels not in (1, 2):
            raise ValueError("audio_channels must be 1 or 2")
        if not 0 <= crf <= 51:
            raise ValueError(f"crf must be 0 (lossless) to 51, got {crf}")
        self.crf = crf
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fps = fps
        self.audio_rate = audio_rate
        self.audio_layout = "mono" if audio_channels == 1 else "stereo"
        self.video_codec = video_codec or pick_video_codec()
        self._container: av.container.OutputContainer | None = None  # opened with the first frame
        self._closed = False
        self._vstream: av.video.stream.VideoStream | None = None
        self._astream: av.audio.stream.AudioStream | None = None
        self._resampler = av.AudioResampler(format="fltp", layout=self.audio_layout, rate=audio_rate)
        self._pending_audio: list[av.AudioFrame] = []
        self._last_pts = -1
        self._size: tuple[int, int] = (0, 0)
        self.frames_written = 0
        self.audio_samples_written = 0

    def _open_streams(self, width: int, height: int) -> None:
        self._container = av.open(str(self.path), mode="w")
        v = self._container.add_stream(self.video_codec, rate=self.fps)
        v.width, v.height = width - width % 2, height - height % 2  # yuv420p wants even sizes
        v.pix_fmt = "yuv420p"
        v.time_base = Fraction(1, self.fps)
        v.codec_context.time_base = Fraction(1, self.fps)
        if self.video_codec == "libx264":
            v.options = {"preset": "veryfast", "crf": str(self.crf)}
        else:
            v.bit_rate = 2_000_000
        a = self._container.add_stream(AUDIO_CODEC, rate=self.audio_rate)
        a.layout = self.audio_layout
        a.bit_rate = 64_000 if self.audio_layout == "mono" else 128_000
        self._vstream, self._astream = v, a
        self._size = (v.width, v.height)

    def video(self, index: int, rgb: np.ndarray) -> None:
        """Frame `index` on the output timeline; a repeated or earlier index is moved to the next slot."""
        if self._closed:
            raise RuntimeError(f"{self.path} is already closed")
        if self._vstream is None:
            self._open_streams(rgb.shape[1], rgb.shape[0])
            pending, self._pending_audio = self._pending_audio, []
            for f in pending:
                self._encode_audio(f)
        w, h = self._size
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:h, :w]), format="rgb24")
        frame.pts = self._last_pts = max(index, self._last_pts + 1)
        assert self._vstream is not None
        for packet in self._vstream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def audio(self, pcm: np.ndarray, sample_rate: int) -> None:
        """Interleaved int16 [n] (mono) or [n, channels], appended after the audio written before."""
        pcm = np.asarray(pcm, np.int16)
        channels = 1 if pcm.ndim == 1 else pcm.shape[1]
        if channels > 2:
            pcm, channels = pcm[:, :2], 2
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm).reshape(1, -1), format="s16", layout="mono" if channels == 1 else "stereo"
        )
        frame.sample_rate = sample_rate
        if self._closed:
            return
        for out in self._resampler.resample(frame):
            if self._astream is None:
                self._pending_audio.append(out)
            else:
                self._encode_audio(out)

    def _encode_audio(self, frame: av.AudioFrame) -> None:
        assert self._astream is not None and self._container is not None
        frame.pts = self.audio_samples_written
        frame.time_base = Fraction(1, self.audio_rate)
        self.audio_samples_written += frame.samples
        for packet in self._astream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        """Flush the encoders and finish the file (no file at all when no frame came)."""
        self._closed = True
        if self._container is None:
            return
        if self._vstream is not None and self._astream is not None:
            for out in self._resampler.resample(None):
                self._encode_audio(out)
            for packet in self._vstream.encode(None):
                self._container.mux(packet)
            for packet in self._astream.encode(None):
                self._container.mux(packet)
        self._container.close()
        self._container = None
        log.info("wrote %s: %d frames (%s), %d audio samples", self.path, self.frames_written,
                 self.video_codec, self.audio_samples_written)
