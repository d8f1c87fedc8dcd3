"""Idle life: blinks on a random schedule and a slow head sway, both pure functions of time.

Everything here is a function of the session-wide time t (seconds) and a seed, never of how the
audio was cut into windows, so window boundaries cannot cause jumps and the same seed replays
the same motion.
"""

from __future__ import annotations

import numpy as np


class BlinkSchedule:
    """Blink start times drawn with intervals uniform in [lo, hi] seconds, extended on demand."""

    def __init__(self, rng: np.random.Generator, interval_s: tuple[float, float], duration_s: float) -> None:
        self._rng = rng
        self._lo, self._hi = interval_s
        self._dur = duration_s
        self._starts: list[float] = [float(rng.uniform(0.6, self._hi))]

    def _extend(self, t_max: float) -> None:
        while self._starts[-1] <= t_max:
            self._starts.append(self._starts[-1] + float(self._rng.uniform(self._lo, self._hi)))

    def amount(self, t: np.ndarray) -> np.ndarray:
        """Eyelid closure in [0, 1] at times t [F] (1 = fully shut)."""
        self._extend(float(t.max()) if t.size else 0.0)
        starts = np.asarray(self._starts)
        i = np.searchsorted(starts, t, side="right") - 1
        phase = np.where(i >= 0, (t - starts[np.maximum(i, 0)]) / self._dur, -1.0)
        inside = (phase >= 0) & (phase < 1)
        # Fast close, slightly slower open; the 1.5x gain gives a fully shut plateau mid-blink.
        shape = np.sin(np.pi * np.clip(phase, 0, 1) ** 0.8)
        return np.where(inside, np.clip(1.5 * shape, 0.0, 1.0), 0.0).astype(np.float32)


class HeadSway:
    """Smooth noise (sums of incommensurate sines) for roll and x/y translation.

    Slow components (0.05-0.35 Hz) always run; faster ones (0.5-1.3 Hz) fade in with speech
    activity, as heads move more and quicker while talking.
    """

    def __init__(self, rng: np.random.Generator) -> None:
        def bank(lo: float, hi: float, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            f = rng.uniform(lo, hi, size=(3, k))
            ph = rng.uniform(0, 2 * np.pi, size=(3, k))
            a = rng.uniform(0.5, 1.0, size=(3, k))
            return f, ph, a / a.sum(axis=1, keepdims=True)

        self._slow = bank(0.05, 0.35, 3)
        self._fast = bank(0.5, 1.3, 2)

    @staticmethod
    def _eval(bank: tuple[np.ndarray, np.ndarray, np.ndarray], t: np.ndarray) -> np.ndarray:
        f, ph, a = bank  # [3, k]
        return (a[None] * np.sin(2 * np.pi * f[None] * t[:, None, None] + ph[None])).sum(axis=2)  # [F, 3]

    def pose(self, t: np.ndarray, activity: np.ndarray) -> np.ndarray:
        """Unit-scale (roll, dx, dy) [F, 3] in about [-1, 1] at times t [F], activity [F] in [0, 1]."""
        return self._eval(self._slow, t) + 0.35 * activity[:, None] * self._eval(self._fast, t)
