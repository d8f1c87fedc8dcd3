"""Parity of the FlashHead DiT with the reference `WanModelAudioProject` (fp32), on every set: FLASHHEAD_GOLDEN
and FLASHHEAD_VECTORS (tools/flashhead_vectors.py).

The model is built from the set's dit_config.json and filled through the real loader from the
reference's own key names (the golden set's unused text_embedding/audio_emb tensors included), so
another set with other sizes passes unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from model.dit.flashhead import FlashHeadDiT
from model.flashhead import FlashHeadConfig, load_flashhead_dit
from model.weights import WeightLoadError

ATOL = 1e-4


@pytest.fixture(scope="module")
def config(flashhead_set_dir: Path) -> FlashHeadConfig:
    return FlashHeadConfig.from_file(flashhead_set_dir / "dit_config.json")


@pytest.fixture(scope="module")
def model(config: FlashHeadConfig, flashhead_set_dir: Path) -> FlashHeadDiT:
    dit, report = load_flashhead_dit(config, flashhead_set_dir / "dit_weights.safetensors", dtype=torch.float32)
    return dit


@pytest.fixture(scope="module")
def run(model: FlashHeadDiT, flashhead_set_dir: Path) -> tuple[dict, torch.Tensor, dict]:
    g = load_file(flashhead_set_dir / "dit_case.safetensors")
    capture: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        out = model(g["in.x"], g["in.t"], g["in.context"], g["in.y"], capture=capture)
    return g, out, capture


def test_output_matches_reference(run) -> None:
    g, out, _ = run
    assert out.shape == g["out"].shape
    torch.testing.assert_close(out, g["out"], atol=ATOL, rtol=0)


def test_every_intermediate_matches_reference(run, config: FlashHeadConfig) -> None:
    g, _, capture = run
    names = [k.removeprefix("inter.") for k in g if k.startswith("inter.")]
    assert {f"block{i}.out" for i in range(config.dit.num_layers)} <= set(names)
    for name in names:
        torch.testing.assert_close(capture[name], g[f"inter.{name}"], atol=ATOL, rtol=0, msg=lambda m, n=name: f"{n}: {m}")


def test_sizes_come_from_the_config(config: FlashHeadConfig, flashhead_set_dir: Path) -> None:
    raw = json.loads((flashhead_set_dir / "dit_config.json").read_text())
    assert config.dit.dim == raw["dim"] and config.dit.num_layers == raw["num_layers"]
    assert config.dit.output_dim == raw["dim"]  # audio tokens are model-wide
    assert config.dit.audio_layers == raw["audio"]["blocks"] and config.dit.audio_width == raw["audio"]["channels"]
    assert config.vae_stride == tuple(raw["vae_stride"])


def test_release_config_gets_the_hard_wired_audio_sizes() -> None:
    cfg = FlashHeadConfig.from_kwargs({
        "_class_name": "WanModelAudioProject", "dim": 1536, "in_dim": 32, "ffn_dim": 8960, "out_dim": 16,
        "text_dim": 4096, "freq_dim": 256, "eps": 1e-6, "vae_stride": [4, 8, 8], "patch_size": [1, 2, 2],
        "num_heads": 12, "num_layers": 30, "has_image_input": False,
    })
    d = cfg.dit
    assert (d.audio_layers, d.audio_width, d.intermediate_dim, d.context_tokens, d.output_dim) == (12, 768, 512, 32, 1536)
    assert cfg.motion_frames(2) == 5 and cfg.latent_frames(33) == 9 and cfg.latent_hw(512, 512) == (64, 64)


def test_lite_geometry_follows_its_vae_stride() -> None:
    lite = FlashHeadConfig.from_kwargs({
        "dim": 1536, "in_dim": 256, "ffn_dim": 8960, "out_dim": 128, "text_dim": 4096, "freq_dim": 256, "eps": 1e-6,
        "vae_stride": [8, 32, 32], "patch_size": [1, 1, 1], "num_heads": 12, "num_layers": 30,
    })
    # the reference: motion_frames_num = (2 - 1) * vae_stride[0] + 1 -> 9, so 33 - 9 = 24 new frames per chunk
    assert lite.motion_frames(2) == 9 and lite.latent_frames(33) == 5 and lite.latent_hw(512, 512) == (16, 16)
    assert lite.latent_channels == 128 and lite.dit.vae_scale == 8 and lite.dit.audio_window_vf == 12


def test_unused_keys_are_skipped_but_a_missing_key_is_an_error(flashhead_golden_dir: Path, tmp_path) -> None:
    config = FlashHeadConfig.from_file(flashhead_golden_dir / "dit_config.json")
    weights = load_file(flashhead_golden_dir / "dit_weights.safetensors")
    assert any(k.startswith("audio_emb.") for k in weights) and any(k.startswith("text_embedding.") for k in weights)
    del weights["blocks.0.cross_attn.norm_k.weight"]
    save_file(weights, tmp_path / "broken.safetensors")
    with pytest.raises(WeightLoadError, match="blocks.0.cross_attn.norm_k.weight"):
        load_flashhead_dit(config, tmp_path / "broken.safetensors", dtype=torch.float32)


def test_audio_of_the_wrong_shape_is_a_clear_error(model: FlashHeadDiT, run) -> None:
    g, _, _ = run
    with pytest.raises(ValueError, match="audio must be"):
        model(g["in.x"], g["in.t"], g["in.context"][:, 1:], g["in.y"])


def test_a_batch_equals_its_elements_alone(model: FlashHeadDiT, run) -> None:
    g, out, _ = run
    x2 = torch.cat([g["in.x"], g["in.x"].flip(2)])
    with torch.no_grad():
        both = model(x2, torch.cat([g["in.t"], g["in.t"] * 0.5]), g["in.context"], g["in.y"])
        second = model(x2[1:], g["in.t"] * 0.5, g["in.context"], g["in.y"])
    torch.testing.assert_close(both[:1], out, atol=1e-5, rtol=0)
    torch.testing.assert_close(both[1:], second, atol=1e-5, rtol=0)
