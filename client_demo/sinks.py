"""Where the returned avatar goes: an mp4 file (PyAV) and/or an on-screen window (OpenCV GUI).

The mp4 keeps the server's timing: video frame `i` is written at pts `i` in a 1/fps time base and
the returned audio is appended sample by sample, so the file plays in sync like the live stream.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)

class FrameSink(Protocol):
    """Receives the returned stream: RGB frames [H, W, 3] and interleaved PCM16 audio [n, channels]."""

    def video(self, index: int, rgb: np.ndarray) -> None: ...

    def audio(self, pcm: np.ndarray, sample_rate: int) -> None: ...

    def close(self) -> None: ...


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
