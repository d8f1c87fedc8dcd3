"""Bounded FIFOs of 16 kHz speech samples that remember when each sample arrived.

Arrival times let the engine measure latency per output frame (audio in -> matching frame out).
The bound is what keeps a client that sends faster than real time from growing memory: a push
that would overflow is refused whole and the caller tells the client. `SpeechBuffers` holds a
session's FIFOs (one per speaker) on the model side, where windows are taken from them.
"""

from __future__ import annotations

import bisect
import math
from collections import deque

import numpy as np

from .generator import SAMPLE_RATE


class AudioOverflow(RuntimeError):
    """The session's speech buffer is full: the client sends faster than real time."""


def overflow(held: int, capacity: int) -> AudioOverflow:
    return AudioOverflow(f"speech buffer full ({held} of {capacity} samples held): send audio in real time, not faster")


def speech_capacity(max_buffer_s: float, samples_needed: int) -> int:
    """Samples buffered per speaker before a push is refused: `max_buffer_s`, but at least two
    windows' worth (a window and its look-ahead must always fit)."""
    return max(int(max_buffer_s * SAMPLE_RATE), 2 * samples_needed)


class SpeechFifo:
    """Samples in arrival order; `take` consumes from the front, `peek` looks without consuming."""

    def __init__(self, max_samples: int) -> None:
        if max_samples <= 0:
            raise ValueError("max_samples must be > 0")
        self.max_samples = max_samples
        self._chunks: deque[np.ndarray] = deque()
        self._size = 0
        self._consumed = 0  # absolute index of the first sample still held
        self._stamp_ends: list[int] = []  # absolute end index (exclusive) of each pushed chunk
        self._stamp_times: list[float] = []

    def __len__(self) -> int:
        return self._size

    @property
    def free(self) -> int:
        return self.max_samples - self._size

    @property
    def consumed(self) -> int:
        """Samples that have left the FIFO since it was made (taken or cleared)."""
        return self._consumed

    def push(self, samples: np.ndarray, arrival: float) -> None:
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if samples.size == 0:
            return
        if samples.size > self.free:
            raise overflow(self._size, self.max_samples)
        self._chunks.append(samples)
        self._size += samples.size
        end = self._consumed + self._size
        self._stamp_ends.append(end)
        self._stamp_times.append(arrival)

    def peek(self, n: int) -> np.ndarray:
        """The first min(n, len) samples, not consumed."""
        n = min(n, self._size)
        out = np.empty(n, np.float32)
        pos = 0
        for chunk in self._chunks:
            if pos >= n:
                break
            k = min(chunk.size, n - pos)
            out[pos : pos + k] = chunk[:k]
            pos += k
        return out

    def arrival_of(self, offset: int) -> float | None:
        """Arrival time of the sample `offset` places from the front (None if not held)."""
        if not 0 <= offset < self._size:
            return None
        absolute = self._consumed + offset
        i = bisect.bisect_right(self._stamp_ends, absolute)
        return self._stamp_times[i]

    def take(self, n: int) -> np.ndarray:
        """Remove and return the first min(n, len) samples."""
        out = self.peek(n)
        n = out.size
        left = n
        while left:
            chunk = self._chunks[0]
            if chunk.size <= left:
                self._chunks.popleft()
                left -= chunk.size
            else:
                self._chunks[0] = chunk[left:]
                left = 0
        self._size -= n
        self._consumed += n
        drop = bisect.bisect_right(self._stamp_ends, self._consumed)
        del self._stamp_ends[:drop]
        del self._stamp_times[:drop]
        return out

    def clear(self) -> None:
        self.take(self._size)


class SpeechBuffers:
    """A session's speech on the model side: one SpeechFifo per speaker, and what the planner reads
    from them (the fullest buffer, the oldest wait, how long since audio came, whether it ended)."""

    def __init__(self, speakers: int, capacity: int) -> None:
        self.fifos = [SpeechFifo(capacity) for _ in range(speakers)]
        self.last_audio_at: float | None = None  # when audio last came (the client is still sending)
        self.input_ended = False

    def push(self, speaker: int, samples: np.ndarray, arrival: float, now: float) -> None:
        """Any push (even an empty one) means the input goes on."""
        self.fifos[speaker].push(samples, arrival)
        if samples.size:
            self.last_audio_at = now
        self.input_ended = False

    def push_tail(self, speaker: int, samples: np.ndarray, arrival: float) -> None:
        """The resampler's last samples at the end of input: buffered, but no sign of a live client."""
        self.fifos[speaker].push(samples, arrival)

    def fill(self) -> int:
        """Samples held by the fullest speaker's buffer."""
        return max(len(f) for f in self.fifos)

    def oldest_wait(self, now: float) -> float:
        arrivals = [t for t in (f.arrival_of(0) for f in self.fifos) if t is not None]
        return now - min(arrivals) if arrivals else 0.0

    def input_idle(self, now: float) -> float:
        return math.inf if self.last_audio_at is None else now - self.last_audio_at

    def consumed(self) -> tuple[int, ...]:
        return tuple(f.consumed for f in self.fifos)

    def clear(self) -> None:
        for fifo in self.fifos:
            fifo.clear()
