"""Normalisation statistics of the wav2vec2 front end: whole-clip values and live running estimates.

The reference normalises over the whole clip three times before the CNN's second layer:
loudness gain g to -23 LUFS, input (x - mean) / sqrt(var + 1e-7), and (for `feat_extract_norm ==
"group"`, the base model's setting) a GroupNorm with one group per channel over the clip's time
axis after the first conv. With r = conv0(x) (raw audio, no bias) the composition is exactly

    GN(conv0(input)) = gamma * (r - mean_t r) / sqrt(var_t r + eps_gn * s2) + beta,
    s2 = var(x) + eps_in / g**2

so the input mean cancels, the gain only moves an epsilon, and what a live extractor must
estimate is the per-channel mean/variance of r plus the scalar s2. `NormStats` holds those
numbers; `RunningMoments` estimates mean/variance over a stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyloudnorm
import torch
from transformers import Wav2Vec2Model

from model.audio import SAMPLE_RATE, TARGET_LUFS

INPUT_EPS = 1e-7  # the HF Wav2Vec2FeatureExtractor's variance epsilon


@dataclass(frozen=True)
class NormStats:
    """Fixed normalisation statistics (raw-audio units).

    gain: loudness gain g. in_mean, in_var: mean and (population) variance of the raw samples.
    conv_mean, conv_var: float64 [C] per-channel mean/variance over time of the first conv's
    bias-free output on the raw samples (used when the model's conv stack is "group"-normed).
    """

    gain: float
    in_mean: float
    in_var: float
    conv_mean: torch.Tensor | None = None
    conv_var: torch.Tensor | None = None


class RunningMoments:
    """Per-channel running mean and population variance, merged chunk by chunk (Chan et al.).

    horizon: None -> cumulative over everything seen (converges to the whole-session value);
    a number of observations -> cumulative until that many have been seen, then the old weight is
    capped there, i.e. exponential forgetting with time constant ~horizon. float64 throughout.
    """

    def __init__(self, channels: int, horizon: float | None = None, device: torch.device | str = "cpu") -> None:
        if horizon is not None and horizon <= 0:
            raise ValueError(f"horizon must be > 0 observations or None, got {horizon}")
        self.channels, self.horizon, self.device = channels, horizon, torch.device(device)
        self.reset()

    def reset(self) -> None:
        self.count = 0.0
        self.mean = torch.zeros(self.channels, dtype=torch.float64, device=self.device)
        self.var = torch.zeros(self.channels, dtype=torch.float64, device=self.device)

    def update(self, x: torch.Tensor) -> None:
        """Merge a chunk x: [C, n] (any float dtype)."""
        n_b = x.shape[-1]
        if n_b == 0:
            return
        xb = x.to(self.device, torch.float64)
        var_b, mean_b = torch.var_mean(xb, dim=-1, correction=0)
        n_a = self.count if self.horizon is None else min(self.count, max(self.horizon - n_b, 0.0))
        total = n_a + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / total)
        self.var = (n_a * self.var + n_b * var_b) / total + delta * delta * (n_a * n_b / total**2)
        self.count = total


def raw_conv0(model: Wav2Vec2Model, x: torch.Tensor) -> torch.Tensor:
    """First conv of the feature encoder without its bias, in float32: [samples] -> [C, frames]."""
    conv = model.feature_extractor.conv_layers[0].conv
    w = conv.weight.detach().to(device=x.device, dtype=torch.float32)
    return torch.nn.functional.conv1d(x.to(torch.float32)[None, None], w, stride=conv.stride)[0]


def clip_gain(wave: np.ndarray, sr: int = SAMPLE_RATE, target_lufs: float = TARGET_LUFS) -> float:
    """The reference's loudness gain for a whole clip (1.0 when it leaves the clip unchanged)."""
    meter = pyloudnorm.Meter(sr)
    if wave.shape[0] < meter.block_size * sr:
        return 1.0
    loudness = meter.integrated_loudness(wave.astype(np.float64))
    if abs(loudness) > 100:
        return 1.0
    return float(10.0 ** ((target_lufs - loudness) / 20.0))


@torch.no_grad()
def whole_clip_norm_stats(model: Wav2Vec2Model, wave: np.ndarray, loudness: bool = True) -> NormStats:
    """The statistics the whole-clip path uses for `wave` (float mono [samples] at 16 kHz).

    Inject them into the incremental extractor to test its caching apart from the estimation.
    """
    x = np.asarray(wave, np.float32)
    g = clip_gain(x) if loudness else 1.0
    xd = x.astype(np.float64)
    conv_mean = conv_var = None
    if model.config.feat_extract_norm == "group":
        device = next(model.parameters()).device
        r = raw_conv0(model, torch.from_numpy(x).to(device)).double()
        conv_var, conv_mean = torch.var_mean(r, dim=-1, correction=0)
    return NormStats(g, float(xd.mean()), float(xd.var()), conv_mean, conv_var)


def is_sound(xs: np.ndarray, quiet_rms: float) -> bool:
    """A slot of raw samples has sound when its RMS reaches `quiet_rms` (1e-3 = -60 dBFS)."""
    return bool(np.sqrt(np.mean(np.square(xs, dtype=np.float64))) >= quiet_rms) if xs.size else False


def first_sound_slot(x: np.ndarray, slot: int, quiet_rms: float) -> int | None:
    """Index of the first slot of x (whole slots) with sound, or None."""
    for j in range(x.shape[0] // slot):
        if is_sound(x[j * slot:(j + 1) * slot], quiet_rms):
            return j
    return None


class SoundGate:
    """Which slots feed the running statistics: every slot with sound, and the first `pause_slots`
    quiet slots of each pause after sound (natural pauses, like those inside a clip).

    A live session idles for minutes (the engine pushes zeros); letting that into the statistics
    would pull them toward silence, and the first words after it would come out many times too
    loud. Silence before the first sound never counts.
    """

    def __init__(self, quiet_rms: float, pause_slots: int) -> None:
        self.quiet_rms, self.pause_slots = quiet_rms, pause_slots
        self.reset()

    def reset(self) -> None:
        self.first_sound: int | None = None  # stream index of the first slot with sound
        self._slot = 0
        self._quiet_run = 0

    def counts(self, xs: np.ndarray) -> bool:
        """Classify the next slot (in stream order); True when it should update the statistics."""
        index, self._slot = self._slot, self._slot + 1
        if is_sound(xs, self.quiet_rms):
            if self.first_sound is None:
                self.first_sound = index
            self._quiet_run = 0
            return True
        self._quiet_run += 1
        return self.first_sound is not None and self._quiet_run <= self.pause_slots


class GatedMoments:
    """Running moments of the gated slots; until one has been seen, of all slots (so leading
    silence or noise is still normalised by something of its own scale)."""

    def __init__(self, channels: int, horizon: float | None = None, device: torch.device | str = "cpu") -> None:
        self.gated = RunningMoments(channels, horizon, device)
        self.all = RunningMoments(channels, horizon, device)

    def reset(self) -> None:
        self.gated.reset()
        self.all.reset()

    def update(self, x: torch.Tensor, counts: bool) -> None:
        if self.gated.count == 0:
            self.all.update(x)
        if counts:
            self.gated.update(x)

    @property
    def mean(self) -> torch.Tensor:
        return (self.gated if self.gated.count else self.all).mean

    @property
    def var(self) -> torch.Tensor:
        return (self.gated if self.gated.count else self.all).var
