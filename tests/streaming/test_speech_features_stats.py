"""Running statistics behind the live wav2vec2 features: loudness meter and mean/variance estimates."""

from __future__ import annotations

import math

import numpy as np
import pyloudnorm
import pytest
import torch

from streaming.features import RunningLoudness, RunningMoments
from streaming.features.norm_stats import GatedMoments, SoundGate
from tests.helpers.lite import read_wav_16k


@pytest.mark.parametrize("name", ["speech_en1", "speech_de1", "dialogue_with_pause"])
def test_running_loudness_reads_what_pyloudnorm_reads_for_the_clip(speech_dir, name):
    x = read_wav_16k(speech_dir / f"{name}.wav")
    x = x[: x.shape[0] // 1600 * 1600]  # whole 100 ms hops: pyloudnorm then has no partial last block
    meter = RunningLoudness()
    sizes = np.random.default_rng(1).integers(1, 2000, 2000)
    i = 0
    for n in sizes:
        meter.push(x[i:i + n])
        i += n
        if i >= x.shape[0]:
            break
    expected = pyloudnorm.Meter(16000).integrated_loudness(x.astype(np.float64))
    assert meter.lufs == pytest.approx(expected, abs=1e-6)
    assert meter.gain(-23.0) == pytest.approx(10 ** ((-23.0 - expected) / 20), rel=1e-6)


def test_loudness_is_unmeasurable_in_silence_and_before_one_block():
    meter = RunningLoudness()
    meter.push(0.1 * np.ones(6000, np.float32))
    assert meter.lufs == -math.inf and meter.gain() == 1.0  # < 400 ms
    meter.reset()
    meter.push(np.zeros(16000, np.float32))
    assert meter.gain() == 1.0


def test_windowed_loudness_follows_a_level_change(speech_dir):
    x = read_wav_16k(speech_dir / "speech_en1.wav")[: 6 * 16000]
    loud_then_quiet = np.concatenate([x, 0.1 * x])
    whole, windowed = RunningLoudness(), RunningLoudness(window_s=3.0)
    for m in (whole, windowed):
        m.push(loud_then_quiet)
    quiet = RunningLoudness()
    quiet.push(0.1 * x)
    assert windowed.lufs == pytest.approx(quiet.lufs, abs=1.0)
    assert whole.lufs > quiet.lufs + 5


def test_running_moments_equal_the_whole_signals_mean_and_variance():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5000)) * np.array([[1.0], [0.01], [50.0]]) + np.array([[0.0], [2.0], [-7.0]])
    m = RunningMoments(3)
    i = 0
    for n in rng.integers(1, 400, 100):
        m.update(torch.from_numpy(x[:, i:i + n]))
        i += n
    m.update(torch.from_numpy(x[:, i:]))
    np.testing.assert_allclose(m.mean.numpy(), x.mean(1), rtol=1e-10)
    np.testing.assert_allclose(m.var.numpy(), x.var(1), rtol=1e-10)
    assert m.count == x.shape[1]


def test_a_horizon_forgets_an_old_level_and_cumulative_does_not():
    rng = np.random.default_rng(0)
    cumulative, forgetting = RunningMoments(1), RunningMoments(1, horizon=1000)
    for scale in [1.0] * 50 + [10.0] * 30:  # chunks of 100: 5000 at var 1, then 3000 at var 100
        chunk = torch.from_numpy(scale * rng.standard_normal((1, 100)))
        cumulative.update(chunk)
        forgetting.update(chunk)
    assert float(forgetting.var[0]) == pytest.approx(100.0, rel=0.15)
    assert float(cumulative.var[0]) < 50.0
    assert forgetting.count == 1000


def test_sound_gate_counts_sound_and_short_pauses_after_it():
    gate = SoundGate(quiet_rms=1e-3, pause_slots=3)
    quiet, loud = np.zeros(640, np.float32), np.full(640, 0.1, np.float32)
    pattern = [quiet, quiet, loud, quiet, quiet, quiet, quiet, quiet, loud, quiet]
    assert [gate.counts(x) for x in pattern] == [False, False, True, True, True, True, False, False, True, True]
    assert gate.first_sound == 2


def test_gated_moments_fall_back_to_all_slots_until_one_counts():
    m = GatedMoments(1)
    m.update(torch.full((1, 10), 2.0, dtype=torch.float64), counts=False)
    assert float(m.mean[0]) == 2.0
    m.update(torch.full((1, 10), 5.0, dtype=torch.float64), counts=True)
    m.update(torch.full((1, 10), 7.0, dtype=torch.float64), counts=False)
    assert float(m.mean[0]) == 5.0 and float(m.var[0]) == 0.0
