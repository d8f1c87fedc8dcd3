"""Latency and frame-rate accounting per session: audio in -> the frame made from it out."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LatencySummary:
    last_s: float | None
    mean_s: float | None
    p50_s: float | None
    p95_s: float | None
    samples: int


class LatencyTracker:
    """Keeps the last `window` latencies (seconds) and the emission times of recent frames."""

    def __init__(self, window: int = 500) -> None:
        self._lat: deque[float] = deque(maxlen=window)
        self._emits: deque[float] = deque(maxlen=window)

    def record_latency(self, seconds: float) -> None:
        self._lat.append(seconds)

    def record_emit(self, t: float) -> None:
        self._emits.append(t)

    def summary(self) -> LatencySummary:
        if not self._lat:
            return LatencySummary(None, None, None, None, 0)
        a = np.fromiter(self._lat, float)
        return LatencySummary(
            float(a[-1]), float(a.mean()), float(np.percentile(a, 50)), float(np.percentile(a, 95)), a.size
        )

    def fps(self, horizon: int = 100) -> float | None:
        """Measured output frame rate over the last `horizon` frames."""
        if len(self._emits) < 3:
            return None
        recent = list(self._emits)[-horizon:]
        span = recent[-1] - recent[0]
        return (len(recent) - 1) / span if span > 0 else None

    def interval_jitter(self, horizon: int = 500) -> dict[str, float] | None:
        """Frame interval statistics (seconds) over recent frames."""
        if len(self._emits) < 3:
            return None
        d = np.diff(np.fromiter(list(self._emits)[-horizon:], float))
        return {"mean_s": float(d.mean()), "p99_s": float(np.percentile(d, 99)), "max_s": float(d.max())}
