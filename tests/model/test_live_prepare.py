"""Preparing the next live window ahead of its audio changes nothing but when the work is done."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from model.infinitetalk import WindowSettings, audio_rows
from model.infinitetalk.handoff import FrameHandoff
from model.infinitetalk.live import LiveSource, LiveWindowRunner
from model.sampling import GuidanceScales
from model.vae import video_to_frames

from ..helpers.golden_models import loop_pipeline

SETTINGS = WindowSettings(frame_num=9, motion_frames=5, steps=2, shift=7.0, guidance=GuidanceScales(1.0, 2.0))


@pytest.fixture(scope="module")
def setup(golden_dir):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    inputs = load_file(golden_dir / "loop" / "i2v_cfg2.inputs.safetensors")
    pipe = loop_pipeline(golden_dir, "i2v_cfg2")
    img = inputs["image_u8"]
    source = LiveSource(torch.stack([img, img.flip(1)]), fps=12.5)  # a 2-frame video: conditions change
    yield pipe, source, inputs["audio_emb"]
    torch.set_num_threads(before)


def _audio(emb, first):
    return emb[audio_rows(first - SETTINGS.motion_frames, SETTINGS.frame_num, emb.shape[0])][None]


def _run(pipe, source, emb, prepare: bool, windows: int = 3):
    runner = LiveWindowRunner(pipe, SETTINGS)
    state = runner.start(source, seed=5)
    frames, motions = [], []
    for k in range(windows):
        first = k * SETTINGS.new_frames
        if prepare:
            runner.prepare_ahead(state, first)
            runner.prepare_ahead(state, first)  # idempotent: nothing is encoded twice
        frames += list(runner.window(state, _audio(emb, first), first))
        motions.append(state.motion_pixels)
    return frames, motions


@pytest.mark.parametrize("regen", [False, True])
def test_prepared_windows_equal_unprepared_ones_and_skip_the_encodes(setup, regen: bool) -> None:
    pipe, source, emb = setup
    if regen:  # keep the source video outside a box (V2V): its latent is prepared too
        mask = torch.zeros(source.frames.shape[1:3])
        mask[8:32, 16:48] = 1
        source = LiveSource(source.frames, fps=source.fps, regen_mask=mask)
    plain, plain_motion = _run(pipe, source, emb, prepare=False)
    encodes = []
    original = pipe.encode_motion
    pipe.encode_motion = lambda px: encodes.append(px) or original(px)
    try:
        runner = LiveWindowRunner(pipe, SETTINGS)
        state = runner.start(source, seed=5)
        runner.prepare_ahead(state, 0)
        n = len(encodes)
        assert n == (2 if regen else 1) and state.precomputed is not None
        list(runner.window(state, _audio(emb, 0), 0))
        assert len(encodes) == n  # the window used the prepared latents
    finally:
        pipe.encode_motion = original
    prepared, prepared_motion = _run(pipe, source, emb, prepare=True)
    assert len(prepared) == len(plain) == 3 * SETTINGS.new_frames
    assert all(np.array_equal(a, b) for a, b in zip(prepared, plain, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(prepared_motion, plain_motion, strict=True))


def test_a_stale_preparation_re_encodes_the_current_motion_frames(setup) -> None:
    pipe, source, emb = setup
    runner = LiveWindowRunner(pipe, SETTINGS)
    state = runner.start(source, seed=5)
    runner.prepare_ahead(state, 0)
    state.motion_pixels = -state.motion_pixels  # e.g. an interrupt replaced them after preparing
    want = pipe.encode_motion(state.motion_pixels)
    seen = []
    original = pipe.denoise
    pipe.denoise = lambda cond, audio, motion, *a, **k: seen.append(motion) or original(cond, audio, motion, *a, **k)
    try:
        list(runner.window(state, _audio(emb, 0), 0))
    finally:
        pipe.denoise = original
    assert torch.equal(seen[0], want)


def test_handoff_gives_the_pixels_of_video_to_frames() -> None:
    video = torch.rand(3, 4, 8, 6) * 2.4 - 1.2
    pending = FrameHandoff("cpu").submit(video)
    assert pending.ready() and len(pending) == 4
    assert np.array_equal(pending.frames(), video_to_frames(video).numpy())


def test_batched_windows_use_what_was_encoded_ahead_and_equal_plain_batches(setup) -> None:
    from model.dit.teacache import TeaCacheSettings
    from model.infinitetalk.batched import DenoiseItem, denoise_batch

    pipe, source, emb = setup
    other = LiveSource(source.frames.flip(2), fps=source.fps)

    def run(ahead: bool):
        runner = LiveWindowRunner(pipe, SETTINGS)
        states = [runner.start(source, seed=1), runner.start(other, seed=2)]
        out = []
        for k in range(2):
            first = k * SETTINGS.new_frames
            if ahead:
                runner.prepare_ahead(states[0], first)  # only the first session encodes ahead
            works = [runner.prepare(st, _audio(emb, first), first) for st in states]
            assert (works[0].motion_latent is not None) == ahead and works[1].motion_latent is None
            out += list(runner.windows(works))
        return out

    plain, ahead = run(False), run(True)
    assert [k for k, _ in plain] == [k for k, _ in ahead] and len(plain) == 4 * SETTINGS.new_frames
    # a batched VAE encode of both motion clips vs one clip alone: equal up to float rounding
    diff = max(np.abs(a.astype(int) - b.astype(int)).max() for (_, a), (_, b) in zip(plain, ahead, strict=True))
    assert diff <= 1
    # TeaCache also applies to batched passes: threshold 0 changes nothing, a huge one skips steps
    cfg = pipe.dit.cfg
    g = torch.Generator().manual_seed(0)
    cond = pipe.condition(torch.rand(3, 1, 48, 64, generator=g) * 2 - 1, SETTINGS.frame_num)
    items = [DenoiseItem(cond, torch.randn(1, SETTINGS.frame_num, cfg.audio_window, cfg.audio_layers, cfg.audio_width,
                                           generator=g), torch.randn(16, 2, 6, 8, generator=g),
                         torch.randn(16, SETTINGS.latent_frames, 6, 8, generator=g)) for _ in range(2)]
    steps4 = WindowSettings(frame_num=9, motion_frames=5, steps=4, shift=7.0, guidance=GuidanceScales(1.0, 2.0))
    base = denoise_batch(pipe, items, steps4)
    off = denoise_batch(pipe, items, dataclasses.replace(steps4, teacache=TeaCacheSettings(threshold=0.0)))
    skip = denoise_batch(pipe, items, dataclasses.replace(
        steps4, teacache=TeaCacheSettings(threshold=1e9, warmup_steps=1)))
    assert all(torch.equal(a, b) for a, b in zip(base, off, strict=True))
    assert all(torch.isfinite(s).all() and (s - b).abs().max() > 1e-3 for s, b in zip(skip, base, strict=True))
