"""Running integrated loudness (ITU-R BS.1770 gated, as pyloudnorm measures it) for a live stream.

The reference gains each whole clip to -23 LUFS before wav2vec2. Live there is no whole clip, so
this meter keeps the K-weighted energy of every 100 ms hop seen so far (or within a sliding
window) and re-applies the standard gating (400 ms blocks, 75 % overlap, -70 LUFS absolute gate,
-10 LU relative gate) whenever a hop completes. At the end of a clip whose length is a whole
number of hops it reads what `pyloudnorm.Meter.integrated_loudness` reads for the clip.
"""

from __future__ import annotations

import logging
import math
from collections import deque

import numpy as np
import pyloudnorm
import scipy.signal

from model.timebase import SAMPLE_RATE

log = logging.getLogger(__name__)

BLOCK_S = 0.400
HOPS_PER_BLOCK = 4  # 75 % overlap
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
UNMEASURABLE_LU = 100.0  # the reference leaves clips with |loudness| > 100 (silence: -inf) unchanged


class RunningLoudness:
    """Gated loudness of the audio pushed so far; `gain(target)` is the reference's clip gain, live.

    window_s: measure over the last `window_s` seconds only (None: the whole session, like the
    reference's whole clip). Mono, float input in [-1, 1].
    """

    def __init__(self, sample_rate: int = SAMPLE_RATE, window_s: float | None = None) -> None:
        if window_s is not None and window_s < BLOCK_S:
            raise ValueError(f"loudness window_s must be >= {BLOCK_S} s (one gating block), got {window_s}")
        self.sample_rate = sample_rate
        self.hop = round(sample_rate * BLOCK_S / HOPS_PER_BLOCK)
        meter = pyloudnorm.Meter(sample_rate)
        # pyloudnorm's K-weighting: high shelf then high pass, each scaled by its passband gain.
        self._stages = [(f.passband_gain, np.asarray(f.b, np.float64), np.asarray(f.a, np.float64))
                        for f in meter._filters.values()]
        max_blocks = None if window_s is None else max(1, round(window_s * HOPS_PER_BLOCK / BLOCK_S) - 3)
        self._max_blocks = max_blocks
        self.reset()

    def reset(self) -> None:
        self._zi = [np.zeros(max(len(a), len(b)) - 1) for _, b, a in self._stages]
        self._hop_energy = 0.0
        self._hop_fill = 0
        self._recent_hops: deque[float] = deque(maxlen=HOPS_PER_BLOCK)
        self._blocks: deque[float] = deque(maxlen=self._max_blocks)  # mean square per 400 ms block
        self._lufs = -math.inf

    def push(self, x: np.ndarray) -> None:
        """Feed mono samples [n]; updates the loudness when 100 ms hops complete."""
        y = np.asarray(x, np.float64)
        for i, (g, b, a) in enumerate(self._stages):
            y, self._zi[i] = scipy.signal.lfilter(b, a, y, zi=self._zi[i])
            y = g * y
        sq = y * y
        pos, changed = 0, False
        while pos < len(sq):
            take = min(self.hop - self._hop_fill, len(sq) - pos)
            self._hop_energy += float(sq[pos:pos + take].sum())
            self._hop_fill += take
            pos += take
            if self._hop_fill == self.hop:
                self._recent_hops.append(self._hop_energy)
                self._hop_energy, self._hop_fill = 0.0, 0
                if len(self._recent_hops) == HOPS_PER_BLOCK:
                    self._blocks.append(sum(self._recent_hops) / (HOPS_PER_BLOCK * self.hop))
                    changed = True
        if changed:
            self._lufs = self._gated()

    def _gated(self) -> float:
        z = np.fromiter(self._blocks, np.float64)
        with np.errstate(divide="ignore"):
            lk = -0.691 + 10.0 * np.log10(z)
        keep = lk >= ABSOLUTE_GATE_LUFS
        if not keep.any():
            return -math.inf
        relative = -0.691 + 10.0 * math.log10(z[keep].mean()) + RELATIVE_GATE_LU
        keep &= lk > relative
        if not keep.any():
            return -math.inf
        return -0.691 + 10.0 * math.log10(z[keep].mean())

    @property
    def lufs(self) -> float:
        """Integrated loudness so far in LUFS; -inf before the first 400 ms block or in silence."""
        return self._lufs

    def gain(self, target_lufs: float = -23.0) -> float:
        """Linear gain that brings the audio so far to `target_lufs`; 1.0 while unmeasurable."""
        if not math.isfinite(self._lufs) or abs(self._lufs) > UNMEASURABLE_LU:
            return 1.0
        return 10.0 ** ((target_lufs - self._lufs) / 20.0)
