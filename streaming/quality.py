"""Adaptive quality: turn steps (then the generation size) down before a session falls behind real time.

A live session keeps up when each window is made faster than it plays. The controller watches,
per window, the turnaround (queue wait + compute, so the load of other sessions on the same GPU
counts) against the window's duration, and the filler frames the pacer had to insert:

- turnaround above `high_load` x window, or new filler frames -> lower: fewer steps first (scaled by
  the overload, assuming compute proportional to steps), then the next smaller size once steps are
  at their minimum;
- turnaround that would stay below `low_load` x window one level up (predicted conservatively:
  all compute scaling with steps or pixels), `raise_after` windows in a row -> raise one level:
  the size back first, then one step (or the next allowed step count) at a time.

Pure logic, no clocks: the session feeds it measurements and reads the level for its next job.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from .generator import QualityRange

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QualitySettings:
    """enabled: adapt live sessions of backends that offer a `QualityRange` (offline renders never adapt).
    min_steps: fewest steps (None: the backend's minimum). switch_sizes: also use smaller sizes.
    high_load / low_load: turnaround as a fraction of the window's duration above which quality is
    lowered / below which (predicted one level up) it is raised. raise_after: windows of headroom
    in a row before raising. warmup_windows: first windows not judged (they include one-off work such
    as conditioning on the avatar, and warm-up of kernels).
    """

    enabled: bool = True
    min_steps: int | None = None
    switch_sizes: bool = True
    high_load: float = 0.9
    low_load: float = 0.6
    raise_after: int = 3
    warmup_windows: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.low_load < self.high_load:
            raise ValueError(f"need 0 < low_load < high_load, got {self.low_load} and {self.high_load}")
        if self.min_steps is not None and self.min_steps < 1:
            raise ValueError("min_steps must be >= 1")
        if self.raise_after < 1:
            raise ValueError("raise_after must be >= 1")


@dataclass(frozen=True)
class QualityLevel:
    """What the next windows are made with, and why (reason of the last change)."""

    steps: int
    size: tuple[int, int] | None
    reason: str
    full_steps: int
    full_size: tuple[int, int] | None

    @property
    def reduced(self) -> bool:
        return self.steps < self.full_steps or self.size != self.full_size

    def as_dict(self) -> dict:
        return {"steps": self.steps, "size": list(self.size) if self.size else None, "reason": self.reason,
                "reduced": self.reduced}


def _pixels(size: tuple[int, int] | None) -> int:
    return size[0] * size[1] if size else 1


class QualityController:
    """See the module docstring. `observe()` after each window; `level` for the next one."""

    def __init__(self, qrange: QualityRange, settings: QualitySettings | None = None) -> None:
        self.settings = settings or QualitySettings()
        s = self.settings
        self.max_steps = qrange.steps
        floor = min(qrange.steps, max(qrange.min_steps, s.min_steps or qrange.min_steps))
        self.step_choices = tuple(c for c in qrange.choices() if c >= floor) or (qrange.steps,)
        self.min_steps = self.step_choices[0]
        self.sizes: tuple[tuple[int, int], ...] = qrange.sizes if s.switch_sizes else qrange.sizes[:1]
        full = self.sizes[0] if self.sizes else None
        self.level = QualityLevel(qrange.steps, full, "start", qrange.steps, full)
        self.changes = 0
        self.lowered = 0
        self.raised = 0
        self._headroom = 0
        self._fillers = 0
        self._seen = 0

    @property
    def adjustable(self) -> bool:
        return self.min_steps < self.max_steps or len(self.sizes) > 1

    def job_extras(self) -> dict:
        """What the next job asks the backend for."""
        extras: dict = {"steps": self.level.steps}
        if self.level.size is not None:
            extras["size"] = self.level.size
        return extras

    def observe(self, turnaround_s: float, window_s: float, filler_frames: int = 0) -> QualityLevel | None:
        """One window took `turnaround_s` (submit to last frame) for `window_s` of video; `filler_frames`
        is the session's running count. Returns the new level when it changed."""
        new_fillers = filler_frames - self._fillers
        self._fillers = filler_frames
        self._seen += 1
        if self._seen <= self.settings.warmup_windows:
            return None
        load = turnaround_s / window_s
        s = self.settings
        if load > s.high_load or new_fillers > 0:
            self._headroom = 0
            why = (f"{new_fillers} filler frame(s)" if new_fillers > 0 and load <= s.high_load
                   else f"window took {turnaround_s:.2f} s for {window_s:.2f} s of video")
            return self._lower(load, why)
        up = self._next_up(load)
        if up is None or up[2] >= s.low_load:
            self._headroom = 0
            return None
        self._headroom += 1
        if self._headroom < s.raise_after:
            return None
        self._headroom = 0
        steps, size, predicted = up
        return self._set(steps, size, f"headroom: window took {turnaround_s:.2f} s for {window_s:.2f} s "
                                      f"(about {predicted * window_s:.2f} s one level up)", raised=True)

    def _lower(self, load: float, why: str) -> QualityLevel | None:
        lv, s = self.level, self.settings
        target = (s.high_load + s.low_load) / 2
        below = [c for c in self.step_choices if c < lv.steps]
        if below:
            want = math.floor(lv.steps * target / max(load, 1e-9))
            steps = max([c for c in below if c <= want], default=below[0])
            return self._set(steps, lv.size, f"behind: {why}; steps {lv.steps} -> {steps}", raised=False)
        if lv.size is not None and lv.size != self.sizes[-1]:
            size = self.sizes[self.sizes.index(lv.size) + 1]
            return self._set(lv.steps, size, f"behind: {why}; size {lv.size[0]}x{lv.size[1]} -> "
                                             f"{size[0]}x{size[1]}", raised=False)
        return None  # already at the floor: latency may grow, nothing left to turn down

    def _next_up(self, load: float) -> tuple[int, tuple[int, int] | None, float] | None:
        """(steps, size, predicted load) one level up, or None at full quality."""
        lv = self.level
        if lv.size is not None and lv.size != self.sizes[0]:
            size = self.sizes[self.sizes.index(lv.size) - 1]
            return lv.steps, size, load * _pixels(size) / _pixels(lv.size)
        above = [c for c in self.step_choices if c > lv.steps]
        if above:
            return above[0], lv.size, load * above[0] / lv.steps
        return None

    def _set(self, steps: int, size: tuple[int, int] | None, reason: str, raised: bool) -> QualityLevel:
        lv = self.level
        if size != lv.size:
            self._seen = 0  # the first window at a new size conditions on the avatar again: not judged
        self.level = QualityLevel(steps, size, reason, lv.full_steps, lv.full_size)
        self.changes += 1
        if raised:
            self.raised += 1
        else:
            self.lowered += 1
        log.info("adaptive quality: %s", reason)
        return self.level
