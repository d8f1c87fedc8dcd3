"""Sampler arithmetic against the reference goldens (sampler.safetensors, loop/*.windows) and its own laws."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from model.sampling import (
    COND,
    DROP_AUDIO,
    DROP_TEXT,
    LIGHTX2V_4STEP,
    PRESETS,
    UNCOND,
    APGGuidance,
    GuidanceScales,
    adaptive_projected_guidance,
    combine_guidance,
    distilled_timesteps,
    euler_step,
    flow_timesteps,
    get_preset,
    renoise_motion,
    x0_renoise_step,
)

# Settings the golden generator used (golden README, section 5): CFG text 5 / audio 4 on step 0 of
# the 8-step shift-5 schedule; APG with momentum -0.75, threshold 55, eta 0 over two steps.
CFG_TEXT, CFG_AUDIO = 5.0, 4.0
EULER_STEPS, EULER_SHIFT = 8, 5.0


@pytest.fixture(scope="module")
def sampler_golden(golden_dir):
    return load_file(str(golden_dir / "sampler.safetensors"))


def _preds(g):
    return {COND: g["pred_cond"], DROP_TEXT: g["pred_drop_text"], UNCOND: g["pred_uncond"],
            DROP_AUDIO: g["pred_drop_audio"]}


def test_every_golden_schedule_matches_bit_for_bit(sampler_golden):
    keys = [k for k in sampler_golden if k.startswith("timesteps_")]
    assert keys, "no timesteps_* keys in sampler.safetensors"
    for key in keys:
        m = re.fullmatch(r"timesteps_steps(\d+)_shift([0-9.]+)", key)
        assert m, f"unexpected key {key}"
        steps, shift = int(m[1]), float(m[2])
        got = flow_timesteps(steps, shift)
        want = sampler_golden[key]
        assert got.dtype == torch.float32 and got.shape == (steps + 1,)
        assert torch.equal(got, want), f"{key}: max diff {(got - want).abs().max()}"


def test_euler_step_with_three_branch_cfg_matches(sampler_golden):
    g = sampler_golden
    t = flow_timesteps(EULER_STEPS, EULER_SHIFT)
    scales = GuidanceScales(CFG_TEXT, CFG_AUDIO)
    assert scales.branches() == (COND, DROP_TEXT, UNCOND)
    out = euler_step(g["latent"], combine_guidance(_preds(g), scales), t[0], t[1])
    torch.testing.assert_close(out, g["euler_step0_cfg"], atol=1e-6, rtol=0)


def test_euler_step_with_text_scale_one_uses_drop_audio_branch(sampler_golden):
    g = sampler_golden
    t = flow_timesteps(EULER_STEPS, EULER_SHIFT)
    scales = GuidanceScales(1.0, CFG_AUDIO)
    assert scales.branches() == (COND, DROP_AUDIO)
    preds = {k: v for k, v in _preds(g).items() if k in scales.branches()}
    out = euler_step(g["latent"], combine_guidance(preds, scales), t[0], t[1])
    torch.testing.assert_close(out, g["euler_step0_cfg_textscale1"], atol=1e-6, rtol=0)


def test_apg_two_steps_with_momentum_match(sampler_golden):
    g = sampler_golden
    apg = APGGuidance(momentum=-0.75, norm_threshold=55.0, eta=0.0)
    for k in range(2):
        preds = {COND: g["pred_cond"] * (1 + 0.1 * k), DROP_TEXT: g["pred_drop_text"] * (1 - 0.05 * k),
                 UNCOND: g["pred_uncond"]}
        out = apg.combine(preds, GuidanceScales(CFG_TEXT, CFG_AUDIO))
        torch.testing.assert_close(out, g[f"apg_noise_pred_step{k}"], atol=1e-5, rtol=1e-5)


def test_motion_renoise_matches(sampler_golden):
    g = sampler_golden
    out = renoise_motion(g["motion_latent"], g["motion_noise"], g["motion_t"])
    torch.testing.assert_close(out, g["motion_renoised"], atol=1e-6, rtol=0)


def test_loop_window_timesteps_match_settings(golden_dir):
    loop = golden_dir / "loop"
    settings = json.loads((loop / "settings.json").read_text())
    assert settings["cases"]
    for case, cfg in settings["cases"].items():
        with safe_open(str(loop / f"{case}.windows.safetensors"), "pt") as f:
            windows = sorted(k for k in f.keys() if k.endswith(".timesteps"))
            assert windows, f"{case}: no w*.timesteps"
            got = flow_timesteps(cfg["sampling_steps"], float(cfg["shift"]))
            for key in windows:
                assert torch.equal(got, f.get_tensor(key)), f"{case} {key}"


# ---- laws that hold whatever the golden set -------------------------------------------------------


def test_branch_count_follows_the_scales():
    assert GuidanceScales(5.0, 4.0).calls_per_step == 3
    assert GuidanceScales(1.0, 2.0).branches() == (COND, DROP_AUDIO)
    assert GuidanceScales(1.0, 1.0).branches() == (COND,)
    specs = {s.name: s for s in GuidanceScales(5.0, 4.0).branch_specs()}
    assert specs[DROP_TEXT].negative_text and not specs[DROP_TEXT].zero_audio
    assert specs[UNCOND].negative_text and specs[UNCOND].zero_audio


def test_single_branch_guidance_is_the_cond_prediction():
    cond = torch.randn(4, 2, 3, 3)
    assert torch.equal(combine_guidance({COND: cond}, GuidanceScales(1.0, 1.0)), cond)


def test_missing_branch_is_named():
    with pytest.raises(KeyError, match="uncond"):
        combine_guidance({COND: torch.zeros(1), DROP_TEXT: torch.zeros(1)}, GuidanceScales(5.0, 4.0))


def test_euler_follows_a_straight_flow_exactly_when_the_velocity_is_true():
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 2, 3, 3, generator=gen), torch.randn(4, 2, 3, 3, generator=gen)
    t = flow_timesteps(6, 3.0)
    x = noise.clone()
    for i in range(len(t) - 1):
        x = euler_step(x, noise - x0, t[i], t[i + 1])
        s = float(t[i + 1]) / 1000
        torch.testing.assert_close(x, (1 - s) * x0 + s * noise, atol=1e-5, rtol=0)


def test_x0_renoise_step_recovers_x0_and_renoises():
    gen = torch.Generator().manual_seed(1)
    x0, n1, n2 = (torch.randn(4, 2, 3, 3, generator=gen) for _ in range(3))
    t = distilled_timesteps((1000, 750, 500, 250), 5.0)
    x = (1 - t[1] / 1000) * x0 + (t[1] / 1000) * n1
    nxt = x0_renoise_step(x, n1 - x0, t[1], t[2], n2)
    s = t[2] / 1000
    torch.testing.assert_close(nxt, (1 - s) * x0 + s * n2, atol=1e-5, rtol=0)
    torch.testing.assert_close(x0_renoise_step(x, n1 - x0, t[1], 0.0, None), x0, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="noise"):
        x0_renoise_step(x, n1 - x0, t[1], t[2], None)


def test_apg_clips_the_difference_norm_and_drops_the_parallel_part():
    gen = torch.Generator().manual_seed(2)
    cond = torch.randn(4, 2, 3, 3, generator=gen)
    diff = 100 * torch.randn(4, 2, 3, 3, generator=gen)
    out = adaptive_projected_guidance(diff, cond, None, eta=0.0, norm_threshold=5.0)
    assert float(out.norm()) <= 5.0 + 1e-4
    assert abs(float((out * cond).sum())) < 1e-3 * float(cond.norm())


def test_lightx2v_preset_is_one_call_per_step_on_its_trained_steps():
    p = get_preset("lightx2v-4step")
    assert p is LIGHTX2V_4STEP and p.steps == 4 and p.model_calls == 4
    t = p.timesteps()
    assert t.shape == (5,) and t[0] == 1000 and t[-1] == 0 and bool((t[:-1] > t[1:]).all())
    for preset in PRESETS.values():
        assert preset.timesteps().shape == (preset.steps + 1,)
    with pytest.raises(KeyError, match="lightx2v-4step"):
        get_preset("nope")
