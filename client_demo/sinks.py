"""Where the returned avatar goes: an mp4 file (PyAV) and/or an on-screen window (OpenCV GUI).

The mp4 keeps the server's timing: video frame `i` is written at pts `i` in a 1/fps time base and
the returned audio is appended sample by sample, so the file plays in sync like the live stream.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import av
import numpy as np

log = logging.getLogger(__name__)

VIDEO_CODECS = ("libx264", "mpeg4")
AUDIO_CODEC = "aac"


class FrameSink(Protocol):
    """Receives the returned stream: RGB frames [H, W, 3] and interleaved PCM16 audio [n, channels]."""

    def video(self, index: int, rgb: np.ndarray) -> None: ...

    def audio(self, pcm: np.ndarray, sample_rate: int) -> None: ...

    def close(self) -> None: ...


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
        self, path: str | Path, fps: int = 25, audio_rate: int = 16_000, audio_channels: int = 1,
        video_codec: str | None = None,
    ) -> None:
        if audio_channels not in (1, 2):
            raise ValueError("audio_channels must be 1 or 2")
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
            v.options = {"preset": "veryfast", "crf": "23"}
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


def gui_available() -> bool:
    """True when OpenCV can open a window here (not the headless build, and a display exists)."""
    try:
        import cv2

        cv2.namedWindow("infinitetalk-live probe", cv2.WINDOW_AUTOSIZE)
        cv2.destroyWindow("infinitetalk-live probe")
        return True
    except Exception:  # noqa: BLE001 - cv2.error, ImportError, no display: all mean "no window"
        return False


class WindowViewer:
    """Shows the frames in an OpenCV window (audio is not played; write an mp4 to hear it)."""

    def __init__(self, title: str = "infinitetalk-live") -> None:
        import cv2

        self._cv2 = cv2
        self.title = title
        self.closed_by_user = False

    def video(self, index: int, rgb: np.ndarray) -> None:
        self._cv2.imshow(self.title, rgb[:, :, ::-1])
        if self._cv2.waitKey(1) & 0xFF in (27, ord("q")):
            self.closed_by_user = True

    def audio(self, pcm: np.ndarray, sample_rate: int) -> None:
        pass

    def close(self) -> None:
        self._cv2.destroyWindow(self.title)


class MultiSink:
    """Fans the stream out to several sinks."""

    def __init__(self, sinks: list[FrameSink]) -> None:
        self.sinks = sinks

    def video(self, index: int, rgb: np.ndarray) -> None:
        for s in self.sinks:
            s.video(index, rgb)

    def audio(self, pcm: np.ndarray, sample_rate: int) -> None:
        for s in self.sinks:
            s.audio(pcm, sample_rate)

    def close(self) -> None:
        for s in self.sinks:
            s.close()


class SinkThread:
    """Runs sink work (JPEG decode, colour conversion, encoding) on one worker thread, in order.

    The network side stays responsive while the encoder works: a websocket client that stops
    reading gets frames dropped by the server, and aiortc's RTP handling shares the event loop.
    PyAV and OpenCV release the GIL while they work, so this is real parallelism.
    """

    def __init__(self, name: str = "client-sink") -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[..., None], tuple] | None] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, args = item
            if self._error is None:
                try:
                    fn(*args)
                except BaseException as exc:  # noqa: BLE001 - re-raised from join()
                    log.exception("sink failed")
                    self._error = exc

    def call(self, fn: Callable[..., None], *args: object) -> None:
        """Queue `fn(*args)` after everything queued before it."""
        self._queue.put((fn, args))

    def join(self, timeout: float = 60.0) -> None:
        """Finish the queued work and stop; raises the first error a queued call raised."""
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"sink thread still busy after {timeout:.0f} s ({self._queue.qsize()} calls queued)")
        if self._error is not None:
            raise RuntimeError(f"writing the received stream failed: {self._error}") from self._error
