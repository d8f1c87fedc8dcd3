"""Per-stage wall time of window generation (features, DiT steps, VAE, colour match, ...).

Stages are timed with the device synchronised at their edges, so GPU time lands in the stage that
queued it. Off by default: a `StageTimes` is only consulted when one is attached.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import torch


class StageTimes:
    """Accumulated seconds and call counts per stage name."""

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = torch.device(device) if device is not None else None
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def _sync(self) -> None:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self._sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[name] += time.perf_counter() - t0
            self.calls[name] += 1

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] += seconds
        self.calls[name] += 1

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {k: {"seconds": round(v, 6), "calls": self.calls[k]} for k, v in sorted(self.seconds.items())}


@contextmanager
def maybe_stage(times: StageTimes | None, name: str) -> Iterator[None]:
    if times is None:
        yield
    else:
        with times.stage(name):
            yield
