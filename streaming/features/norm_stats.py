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
