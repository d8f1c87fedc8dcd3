"""The live window runner: frames as decoded, motion frames carried bit-exactly between windows."""

from __future__ import annotations

import numpy as np
import torch
from safetensors.torch import load_file

from model.colour import match_colours
from model.infinitetalk import WindowSettings, audio_rows, draw_window_noise, u8_to_unit
from model.infinitetalk.live import LiveSource, LiveWindowRunner, region_masks
from model.sampling import GuidanceScales
from model.vae import video_to_frames

from ..helpers.golden_models import loop_pipeline

SETTINGS = WindowSettings(frame_num=13, motion_frames=5, steps=2, shift=7.0, guidance=GuidanceScales(1.0, 2.0))


def _setup(golden_dir):
    inputs = load_file(golden_dir / "loop" / "i2v_cfg2.inputs.safetensors")
    pipe = loop_pipeline(golden_dir, "i2v_cfg2")
    source = LiveSource(inputs["image_u8"][None])
    emb = inputs["audio_emb"]
    return pipe, source, emb


def _window_audio(emb, first_frame):
    rows = audio_rows(first_frame - SETTINGS.motion_frames, SETTINGS.frame_num, emb.shape[0])
    return emb[rows][None]


def test_live_windows_equal_the_offline_window_operations_and_chain_bit_exactly(golden_dir):
    pipe, source, emb = _setup(golden_dir)
    runner = LiveWindowRunner(pipe, SETTINGS)
    state = runner.start(source, seed=11)
    # An independent replay of the same windows with the pipeline's offline operations.
    gen = torch.Generator().manual_seed(11)
    motion = u8_to_unit(source.frames[0])[:, None]
    ref = motion.clone()
    cond = pipe.condition(ref, SETTINGS.frame_num)
    N, M = SETTINGS.new_frames, SETTINGS.motion_frames
    for k in range(3):
        first = k * N
        frames = list(runner.window(state, _window_audio(emb, first), first))
        assert len(frames) == N and all(f.dtype == np.uint8 for f in frames)
        assert frames[0].shape == (source.frames.shape[1], source.frames.shape[2], 3)
        h, w = (d // 8 for d in source.frames.shape[1:3])
        noise = draw_window_noise(gen, SETTINGS, (h, w), first=k == 0)
        latent = pipe.denoise(cond, _window_audio(emb, first), pipe.encode_motion(motion), noise, SETTINGS)
        decoded_cc = match_colours(pipe.decode(latent), ref, SETTINGS.colour_strength)
        expected = video_to_frames(decoded_cc[:, M:]).numpy()
        for got, want in zip(frames, expected, strict=True):
            assert (got == want).all()
        motion = decoded_cc[:, -M:]
        # The next window is conditioned on exactly the last M colour-corrected frames of this one.
        assert torch.equal(state.motion_pixels, motion)
        assert (video_to_frames(state.motion_pixels[:, -1:]).numpy()[0] == frames[-1]).all()


def test_same_seed_same_video_and_a_video_source_loops(golden_dir):
    pipe, source, emb = _setup(golden_dir)
    runner = LiveWindowRunner(pipe, SETTINGS)
    a = list(runner.window(runner.start(source, 3), _window_audio(emb, 0), 0))
    b = list(runner.window(runner.start(source, 3), _window_audio(emb, 0), 0))
    c = list(runner.window(runner.start(source, 4), _window_audio(emb, 0), 0))
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    assert any((x != y).any() for x, y in zip(a, c, strict=True))
    video = LiveSource(torch.stack([source.frames[0], source.frames[0].flip(1)]), fps=25.0)
    assert [video.index_at(f, 25.0) for f in (-3, 0, 1, 2, 3)] == [0, 0, 1, 0, 1]


def test_a_regeneration_mask_keeps_the_source_video_outside_it(golden_dir):
    pipe, source, emb = _setup(golden_dir)
    h, w = source.frames.shape[1:3]
    frames = torch.stack([source.frames[0], source.frames[0].flip(1), source.frames[0].flip(0)])
    regen = torch.zeros(h, w)
    regen[16:32, 24:40] = 1.0
    video = LiveSource(frames, fps=25.0, regen_mask=regen)
    runner = LiveWindowRunner(pipe, SETTINGS)
    state = runner.start(video, seed=5)
    out = list(runner.window(state, _window_audio(emb, 0), 0))
    _, pixel_mask = region_masks(regen, pipe.vae_stride)
    outside = (pixel_mask[0, 0] == 0).numpy()
    assert 0.3 < outside.mean() < 0.95
    for i, frame in enumerate(out):
        src = frames[video.index_at(i, 25.0)].numpy().astype(int)
        diff = np.abs(frame.astype(int) - src)
        assert diff[outside].max() == 0, f"frame {i} changed outside the mask"
        assert diff[16:32, 24:40].mean() > 5, f"frame {i} not regenerated inside the mask"
