"""A bounded FIFO of 16 kHz speech samples that remembers when each sample arrived.

Arrival times let the engine measure latency per output frame (audio in -> matching frame out).
The bound is what keeps a client that sends faster than real time from growing memory: a push
that would overflow is refused whole and the caller tells the client.
"""

from __future__ import annotations

import bisect
from collections import deque

import numpy as np


class AudioOverflow(RuntimeError):
    """The session's speech buffer is full: the client sends faster than real time."""


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

    def push(self, samples: np.ndarray, arrival: float) -> None:
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if samples.size == 0:
            return
        if samples.size > self.free:
            raise AudioOverflow(
                f"speech buffer full ({self._size} of {self.max_samples} samples held): "
                "send audio in real time, not faster"
            )
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
