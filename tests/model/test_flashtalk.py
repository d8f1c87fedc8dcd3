"""SoulX-FlashTalk: weights-folder detection, its diffusers-style DiT folder, its few-step sampler and windows."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from model.dit import InfiniteTalkDiT
from model.infinitetalk import ModelFiles, load_bundle, u8_to_unit
from model.infinitetalk.kinds import (
    FLASHTALK,
    FLASHTALK_DIR,
    INFINITETALK,
    UnknownWeightsError,
    detect_weights_kind,
)
from model.infinitetalk.live import LiveSource, LiveWindowRunner
from model.infinitetalk.presets import get_preset, preset_size
from model.infinitetalk.tiny import tiny_dit_config, write_tiny_flashtalk_weights, write_tiny_weights
from model.sampling import X0_RENOISE, x0_renoise_step


def _shift(t: float, shift: float = 5.0) -> float:
    u = t / 1000
    return 1000 * shift * u / (1 + (shift - 1) * u)


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    torch.set_num_threads(1)
    flash = write_tiny_flashtalk_weights(tmp_path_factory.mktemp("flash"), seed=4)
    talk = write_tiny_weights(tmp_path_factory.mktemp("talk"))
    return flash, talk


@pytest.fixture(scope="module")
def bundle(roots):
    return load_bundle(ModelFiles.discover(roots[0]), dtype=torch.float32)


# ---------------------------------------------------------------------------------------------- folders

def test_each_folder_kind_is_detected(roots, tmp_path):
    flash, talk = roots
    assert detect_weights_kind(flash) == FLASHTALK
    assert detect_weights_kind(flash / FLASHTALK_DIR) == FLASHTALK  # the model folder itself
    assert detect_weights_kind(talk) == INFINITETALK
    assert detect_weights_kind(talk / "Wan2.1-I2V-14B-480P") == INFINITETALK  # base without audio keys
    # Renamed, a merged audio DiT is still recognised by its contents.
    renamed = tmp_path / "my-avatar-model"
    shutil.copytree(flash / FLASHTALK_DIR, renamed)
    assert detect_weights_kind(renamed) == FLASHTALK  # audio tensors in its index


def test_an_unknown_folder_says_what_both_layouts_look_like(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UnknownWeightsError) as err:
        ModelFiles.discover(tmp_path)
    msg = str(err.value)
    for name in ("Wan2.1-I2V-14B-480P", "infinitetalk.safetensors", "SoulX-FlashTalk-14B", "chinese-wav2vec2-base",
                 "diffusion_pytorch_model"):
        assert name in msg


def test_flashtalk_discovery_finds_the_merged_dit_and_lists_what_is_missing(roots, tmp_path):
    files = ModelFiles.discover(roots[0])
    assert files.kind == FLASHTALK and files.adapter is None
    assert files.dit[0].name == "diffusion_pytorch_model.safetensors.index.json"
    assert files.wav2vec2 == roots[0] / "chinese-wav2vec2-base"  # next to the model folder
    shutil.copytree(roots[0] / FLASHTALK_DIR, tmp_path / FLASHTALK_DIR)
    (tmp_path / FLASHTALK_DIR / "Wan2.1_VAE.safetensors").unlink()
    with pytest.raises(FileNotFoundError) as err:
        ModelFiles.discover(tmp_path / FLASHTALK_DIR)
    msg = str(err.value)
    assert "SoulX-FlashTalk" in msg and "Wan2.1_VAE" in msg and "chinese-wav2vec2-base" in msg


def test_the_diffusers_style_flashtalk_dit_loads_every_tensor_exactly(bundle):
    want = InfiniteTalkDiT(tiny_dit_config()).init_random_weights_(4).state_dict()
    got = bundle.pipe.dit.state_dict()
    assert got.keys() == want.keys()
    assert any(k.startswith("audio_proj.") for k in got)  # the adapter came from the same shards
    for k, v in want.items():
        assert torch.equal(got[k], v), k
    assert "SoulX-FlashTalk" in bundle.description


# ---------------------------------------------------------------------------------------------- sampler

def test_flashtalk_timesteps_are_its_fixed_steps_through_the_shift():
    s = get_preset("flashtalk")
    want = [_shift(t) for t in (1000, 750, 500, 250)] + [0.0]  # 1000, 937.5, 833.3, 625, 0
    np.testing.assert_allclose(s.timesteps().numpy(), want, rtol=1e-6)
    assert s.timesteps().dtype == torch.float32


def test_steps_override_picks_flashtalks_two_step_schedule_and_linspace_otherwise():
    from model.families import ModelOptions
    from model.infinitetalk.assemble import window_settings

    two = window_settings(ModelOptions(preset="flashtalk", steps=2))
    np.testing.assert_allclose(two.timesteps().numpy(), [1000.0, _shift(500), 0.0], rtol=1e-6)
    three = window_settings(ModelOptions(preset="flashtalk", steps=3))
    np.testing.assert_allclose(three.timesteps().numpy(), [_shift(t) for t in (1000, 500.5, 1)] + [0.0], rtol=1e-6)
    assert two.update == three.update == X0_RENOISE


def test_x0_renoise_update_against_hand_computed_values():
    x = torch.tensor([0.5, -1.0, 2.0])
    v = torch.tensor([1.0, 0.25, -2.0])
    n = torch.tensor([0.1, 0.2, -0.3])
    out = x0_renoise_step(x, v, 937.5, 625.0, n)
    # x0 = x - 0.9375 v = [-0.4375, -1.234375, 3.875]; then 0.375 x0 + 0.625 n
    np.testing.assert_allclose(out.numpy(), [-0.1015625, -0.33789063, 1.265625], rtol=1e-6)
    np.testing.assert_allclose(x0_renoise_step(x, v, 625.0, 0.0, None).numpy(), [-0.125, -1.15625, 3.25], rtol=1e-6)


def test_denoise_is_one_model_call_per_step_predicting_x0_and_renoising(bundle):
    pipe = bundle.pipe
    s = get_preset("flashtalk")
    cfg = pipe.dit.cfg
    img = u8_to_unit(torch.from_numpy(np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)))[:, None]
    cond = pipe.condition(img, s.frame_num)
    g = torch.Generator().manual_seed(0)
    audio = torch.randn(1, s.frame_num, 5, cfg.audio_layers, cfg.audio_width, generator=g)
    motion = pipe.encode_motion(img)
    noise = torch.randn(16, s.latent_frames, 4, 4, generator=g)
    draws: list[torch.Tensor] = []

    def step_noise(i: int) -> torch.Tensor:
        draws.append(torch.randn(noise.shape, generator=g))
        return draws[-1]

    seen: dict = {}
    calls: list[torch.Tensor] = []
    hook = pipe.dit.register_forward_pre_hook(lambda m, args: calls.append(args[1].clone()))
    try:
        out = pipe.denoise(cond, audio, motion, noise, s, step_noise=step_noise,
                           trace=lambda name, i, t: seen.__setitem__((name, i), t.clone()))
    finally:
        hook.remove()
    ts = [_shift(t) for t in (1000, 750, 500, 250)] + [0.0]
    assert len(calls) == 4 and all(c.numel() == 1 for c in calls)  # no guidance branches
    np.testing.assert_allclose([float(c) for c in calls], ts[:4], rtol=1e-6)
    assert {name for name, _ in seen} == {"latent", "pred_cond"} and len(draws) == 3  # none for the step to 0
    for i in range(4):
        x, v = seen["latent", i], seen["pred_cond", i]
        x0 = x - ts[i] / 1000 * v
        want = x0 if i == 3 else (1 - ts[i + 1] / 1000) * x0 + ts[i + 1] / 1000 * draws[i]
        want[:, :1] = motion
        torch.testing.assert_close(seen["latent", i + 1], want, rtol=1e-5, atol=1e-6)
    assert torch.equal(out, seen["latent", 4])


# ---------------------------------------------------------------------------------------------- windows

def test_flashtalk_window_arithmetic():
    s = get_preset("flashtalk")
    assert (s.frame_num, s.motion_frames, s.new_frames) == (33, 5, 28)
    assert (s.latent_frames, s.motion_latent_frames) == (9, 2)
    assert s.steps * s.guidance.calls_per_step == 4 and s.colour_strength == 1.0
    assert preset_size("flashtalk") == (768, 448) and preset_size("infinitetalk") is None
    ref = get_preset("infinitetalk")
    assert (ref.frame_num, ref.motion_frames, ref.new_frames, ref.update) == (81, 9, 72, "euler")
    assert ref.guidance.calls_per_step == 3


def _run(bundle, seed: int, windows: int = 2):
    s = get_preset("flashtalk")
    runner = LiveWindowRunner(bundle.pipe, s)
    src = LiveSource(torch.from_numpy(np.random.default_rng(1).integers(0, 256, (1, 32, 32, 3), np.uint8)))
    state = runner.start(src, seed=seed)
    cfg = bundle.pipe.dit.cfg
    audio = torch.randn(1, s.frame_num, 5, cfg.audio_layers, cfg.audio_width, generator=torch.Generator().manual_seed(2))
    out = []
    for k in range(windows):
        frames = list(runner.window(state, audio, k * s.new_frames))
        assert len(frames) == s.new_frames  # every window, the first included, drops its first 5 frames
        assert state.motion_pixels.shape[1] == 5
        assert bundle.pipe.encode_motion(state.motion_pixels).shape[1] == 2  # 5 frames -> 2 latent frames
        out.append(np.stack(frames))
    return np.concatenate(out)


def test_live_flashtalk_windows_are_deterministic_for_a_seed(bundle):
    a, b = _run(bundle, seed=5), _run(bundle, seed=5)
    assert a.shape == (56, 32, 32, 3)
    np.testing.assert_array_equal(a, b)
    c = _run(bundle, seed=6, windows=1)
    assert np.abs(a[:28].astype(int) - c.astype(int)).mean() > 1.0


def test_euler_and_x0_renoise_differ_on_the_same_noise(bundle):
    """The preset's update rule is what runs: switching it to Euler changes the frames."""
    s = get_preset("flashtalk")
    euler = replace(s, update="euler")
    assert euler.timesteps().tolist() == s.timesteps().tolist()
    pipe = bundle.pipe
    img = u8_to_unit(torch.full((32, 32, 3), 120, dtype=torch.uint8))[:, None]
    cond = pipe.condition(img, s.frame_num)
    cfg = pipe.dit.cfg
    audio = torch.zeros(1, s.frame_num, 5, cfg.audio_layers, cfg.audio_width)
    noise = torch.randn(16, s.latent_frames, 4, 4, generator=torch.Generator().manual_seed(3))
    fresh = torch.randn(noise.shape, generator=torch.Generator().manual_seed(4))
    a = pipe.denoise(cond, audio, pipe.encode_motion(img), noise, s, step_noise=lambda i: fresh)
    b = pipe.denoise(cond, audio, pipe.encode_motion(img), noise, euler)
    assert not torch.allclose(a, b)
