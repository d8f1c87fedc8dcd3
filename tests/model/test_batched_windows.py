"""Windows of several sessions denoised and decoded together equal each window made alone."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from model.infinitetalk import WindowSettings
from model.infinitetalk.batched import DenoiseItem, denoise_batch
from model.infinitetalk.live import LiveSource, LiveWindowRunner
from model.sampling import GuidanceScales

from ..helpers.tiny_infinitetalk import tiny_bundle

SETTINGS = WindowSettings(frame_num=9, motion_frames=5, steps=2, shift=5.0, guidance=GuidanceScales(3.0, 2.0))


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    torch.set_num_threads(1)
    return tiny_bundle(tmp_path_factory.mktemp("tiny-batched")).pipe


def _items(pipe, n: int, speakers: int, seed: int) -> list[DenoiseItem]:
    g = torch.Generator().manual_seed(seed)
    cfg = pipe.dit.cfg
    h = w = 4
    items = []
    for k in range(n):
        image = torch.rand(3, 1, 8 * h, 8 * w, generator=g) * 2 - 1
        cond = pipe.condition(image, SETTINGS.frame_num)
        audio = torch.randn(speakers, SETTINGS.frame_num, cfg.audio_window, cfg.audio_layers, cfg.audio_width, generator=g)
        tm = 1 if k == 0 else SETTINGS.motion_latent_frames  # a session's first window has a 1-frame motion latent
        motion = torch.randn(16, tm, h, w, generator=g)
        noise = torch.randn(16, SETTINGS.latent_frames, h, w, generator=g)
        masks = None
        if speakers > 1:
            masks = torch.zeros(speakers + 1, h, w)
            masks[0, :, : w // 2], masks[1, :, w // 2 :] = 1, 1
        items.append(DenoiseItem(cond, audio, motion, noise, masks))
    return items


@pytest.mark.parametrize("batch_branches,speakers", [(True, 1), (False, 1), (True, 2)])
def test_batched_denoise_equals_each_window_alone(pipe, batch_branches, speakers):
    settings = dataclasses.replace(SETTINGS, batch_branches=batch_branches)
    items = _items(pipe, 3, speakers, seed=speakers)
    calls = []
    hook = pipe.dit.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    try:
        batched = denoise_batch(pipe, items, settings)
        n_batched = list(calls)
        calls.clear()
        alone = [pipe.denoise(it.cond, it.audio, it.motion_latent, it.noise, settings, it.ref_target_masks) for it in items]
    finally:
        hook.remove()
    branches = settings.guidance.calls_per_step  # 3
    if batch_branches and speakers == 1:
        assert n_batched == [3 * branches] * settings.steps  # windows x branches in one call per step
    elif batch_branches:
        assert sorted(n_batched) == sorted([3 * 2, 3] * settings.steps)  # the zero-audio branch has 1 speaker
    else:
        assert n_batched == [3] * (branches * settings.steps)
    assert len(calls) == 3 * len(n_batched)  # alone: the same calls once per window
    for got, want, it in zip(batched, alone, items, strict=True):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        assert torch.equal(got[:, : it.motion_latent.shape[1]], it.motion_latent)  # clean motion pasted
    # The windows are really different from each other (the test would be weak otherwise).
    assert (batched[1] - batched[2]).abs().max() > 0.1


def _source(seed: int, size: int = 32) -> LiveSource:
    rng = np.random.default_rng(seed)
    return LiveSource(torch.from_numpy(rng.integers(0, 256, (1, size, size, 3), np.uint8)))


def test_live_windows_of_two_sessions_equal_their_windows_made_alone(pipe):
    settings = dataclasses.replace(SETTINGS, guidance=GuidanceScales(1.0, 2.0))
    runner = LiveWindowRunner(pipe, settings)
    cfg = pipe.dit.cfg
    g = torch.Generator().manual_seed(5)
    audio = [[torch.randn(1, settings.frame_num, cfg.audio_window, cfg.audio_layers, cfg.audio_width, generator=g)
              for _ in range(2)] for _ in range(2)]
    alone_states = [runner.start(_source(s), seed=10 + s) for s in range(2)]
    batch_states = [runner.start(_source(s), seed=10 + s) for s in range(2)]
    n = settings.new_frames
    for k in range(2):  # two windows per session: the second continues from the first's motion frames
        alone = [list(runner.window(alone_states[s], audio[s][k], k * n)) for s in range(2)]
        works = [runner.prepare(batch_states[s], audio[s][k], k * n) for s in range(2)]
        got: list[list[np.ndarray]] = [[], []]
        for s, frame in runner.windows(works):
            got[s].append(frame)
        for s in range(2):
            assert len(got[s]) == n
            diff = np.abs(np.stack(got[s]).astype(int) - np.stack(alone[s]).astype(int))
            assert diff.max() <= 1 and diff.mean() < 0.01
            torch.testing.assert_close(batch_states[s].motion_pixels, alone_states[s].motion_pixels, atol=1e-3, rtol=0)
            assert torch.equal(batch_states[s].generator.get_state(), alone_states[s].generator.get_state())
    assert np.abs(np.stack(got[0]).astype(int) - np.stack(got[1]).astype(int)).mean() > 1  # two different sessions
