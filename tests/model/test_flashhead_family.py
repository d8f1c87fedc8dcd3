"""The FlashHead family: presets, the release-layout detector (every missing file listed at once, one
clear error for mismatched files) and the tiny random releases (Pro and Lite) loaded through the real loaders."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import Wav2Vec2Config, Wav2Vec2Model

from model.audio.loader import Wav2Vec2LoadError
from model.families import ModelOptions
from model.families.registry import build_model, families, family_for
from model.flashhead.assemble import FlashHeadModel
from model.flashhead.release import FlashHeadFilesError, detect_flashhead_kind
from model.flashhead.tiny import TINY_LTX, TINY_WAV2VEC2_64, write_tiny_flashhead, write_tiny_ltx_vae
from model.flashhead.vae import LtxChunkVAE
from model.infinitetalk.tiny import write_tiny_weights
from model.vae.ltx_config import LtxConfigError


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_tiny_flashhead(tmp_path_factory.mktemp("fh") / "SoulX-FlashHead-1_3B")


def test_presets_belong_to_the_flashhead_family_and_folders_are_told_apart(root, tmp_path) -> None:
    family = families()["flashhead"]
    assert set(family.presets) == {"flashhead-pro", "flashhead-lite"}
    assert family_for(ModelOptions(preset="flashhead-lite")) is family
    assert detect_flashhead_kind(root) == "flashhead-pro" and family_for(ModelOptions(weights=root)) is family
    infinitetalk = write_tiny_weights(tmp_path / "it")
    assert detect_flashhead_kind(infinitetalk) is None
    assert family_for(ModelOptions(weights=infinitetalk)) is families()["infinitetalk"]


def test_the_tiny_release_loads_with_the_presets_settings(root) -> None:
    model = build_model(ModelOptions(weights=root, size=(64, 64), seed=1))
    assert isinstance(model, FlashHeadModel) and model.preset == "flashhead-pro"
    assert model.chunk.frame_num == 33 and model.chunk.motion_latents == 2 and model.chunk.sampler.steps == 4
    assert model.motion_frames == 5 and model.new_frames == 28  # Pro: Wan VAE, temporal stride 4
    assert model.chunk.colour_strength == 1.0 and model.size == (64, 64)
    assert "TINY RANDOM" in model.description
    assert build_model(ModelOptions(weights=root, steps=2, size=(64, 64))).chunk.sampler.steps == 2
    with pytest.raises(ValueError, match="run \\[2, 4\\] steps"):
        build_model(ModelOptions(weights=root, steps=3))
    with pytest.raises(ValueError, match="multiple of 16x16"):
        build_model(ModelOptions(weights=root, size=(40, 40)))


def test_an_empty_release_folder_lists_every_missing_file(tmp_path) -> None:
    empty = tmp_path / "SoulX-FlashHead-1_3B"
    empty.mkdir()
    with pytest.raises(FlashHeadFilesError) as err:
        build_model(ModelOptions(weights=empty))
    msg = str(err.value)
    for part in ("Model_Pro/config.json", "diffusion_pytorch_model*.safetensors", "VAE_Wan/Wan2.1_VAE.pth",
                 "wav2vec2-base-960h"):
        assert part in msg, part


def test_a_pro_model_with_the_lite_vae_is_one_clear_error(root, tmp_path) -> None:
    mixed = tmp_path / "mixed"
    shutil.copytree(root, mixed)
    shutil.rmtree(mixed / "VAE_Wan")
    (mixed / "VAE_LTX").mkdir()
    with pytest.raises(FlashHeadFilesError, match="VAE_LTX/ is the VAE of SoulX-FlashHead-1.3B Lite"):
        build_model(ModelOptions(weights=mixed))


def test_a_wrong_wav2vec2_is_one_clear_error(root, tmp_path) -> None:
    wrong = tmp_path / "wrong"
    shutil.copytree(root, wrong)
    big = dict(TINY_WAV2VEC2_64, num_hidden_layers=3)
    Wav2Vec2Model(Wav2Vec2Config(**big)).save_pretrained(wrong / "wav2vec2-base-960h", safe_serialization=True)
    with pytest.raises(Wav2Vec2LoadError, match="has 3 layers x 64, but .* was trained on 2 x 64"):
        build_model(ModelOptions(weights=wrong))


@pytest.fixture(scope="module")
def lite_root(tmp_path_factory) -> Path:
    return write_tiny_flashhead(tmp_path_factory.mktemp("fh-lite") / "SoulX-FlashHead-1_3B", kind="flashhead-lite")


def test_the_tiny_lite_release_loads_with_the_ltx_vae(lite_root) -> None:
    assert detect_flashhead_kind(lite_root) == "flashhead-lite"
    model = build_model(ModelOptions(weights=lite_root, size=(64, 32)))
    assert model.preset == "flashhead-lite" and isinstance(model.vae, LtxChunkVAE)
    assert model.motion_frames == 9 and model.new_frames == 24  # Lite: LTX VAE, temporal stride 8
    assert "Lite (LTX-Video VAE)" in model.description
    with pytest.raises(ValueError, match="not a multiple of the VAE.s spatial stride 32x32"):
        build_model(ModelOptions(weights=lite_root, size=(48, 48)))


def test_a_lite_model_with_the_pro_vae_or_another_ltx_vae_is_one_clear_error(root, lite_root, tmp_path) -> None:
    with pytest.raises(FlashHeadFilesError, match="Model_Lite/config.json"):
        build_model(ModelOptions(weights=root, preset="flashhead-lite"))
    mixed = tmp_path / "mixed"
    shutil.copytree(lite_root, mixed)
    shutil.rmtree(mixed / "VAE_LTX")
    shutil.copytree(root / "VAE_Wan", mixed / "VAE_Wan")
    with pytest.raises(FlashHeadFilesError, match="VAE_Wan/ is the VAE of SoulX-FlashHead-1.3B Pro"):
        build_model(ModelOptions(weights=mixed))
    variant = tmp_path / "variant"
    shutil.copytree(lite_root, variant)
    config = json.loads((variant / "VAE_LTX" / "config.json").read_text())
    (variant / "VAE_LTX" / "config.json").write_text(json.dumps({**config, "timestep_conditioning": True}))
    with pytest.raises(LtxConfigError, match="not the LTX-Video 0.9.0 VAE .* timestep_conditioning=True"):
        build_model(ModelOptions(weights=variant))
    wide = tmp_path / "wide"
    shutil.copytree(lite_root, wide)
    write_tiny_ltx_vae(wide / "VAE_LTX", dataclasses.replace(TINY_LTX, latent_channels=8))
    with pytest.raises(FlashHeadFilesError, match="16 latent channels, this one has 8x32 and 8"):
        build_model(ModelOptions(weights=wide))


def test_unsupported_options_are_refused(root) -> None:
    with pytest.raises(ValueError, match="--lora"):
        build_model(ModelOptions(weights=root, loras=((root / "x.safetensors", 1.0),)))
    with pytest.raises(FlashHeadFilesError, match="needs --weights DIR"):
        build_model(ModelOptions(preset="flashhead-pro"))


def test_the_loaded_dit_skips_the_references_unused_tensors(root) -> None:
    from safetensors import safe_open

    with safe_open(str(root / "Model_Pro" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        keys = set(f.keys())
    model = build_model(ModelOptions(weights=root, size=(64, 64)))
    own = set(model.dit.state_dict())
    assert {k for k in keys if k.startswith(("text_embedding.", "audio_emb."))} and keys - own
    assert all(k.startswith(("text_embedding.", "audio_emb.")) for k in keys - own) and own <= keys
    assert all(p.device.type != "meta" for p in model.dit.parameters())
    assert torch.isfinite(next(model.dit.parameters())).all()


def test_a_single_file_wav2vec2_beside_the_models_is_used(root, tmp_path) -> None:
    from safetensors.torch import save_file

    comfy = tmp_path / "comfy"
    shutil.copytree(root, comfy, ignore=shutil.ignore_patterns("wav2vec2-base-960h"))
    original = Wav2Vec2Model.from_pretrained(root / "wav2vec2-base-960h")
    save_file({"wav2vec2." + k: v.half().contiguous() for k, v in original.state_dict().items()},
              comfy / "wav2vec2-base-960h_fp16.safetensors")
    model = build_model(ModelOptions(weights=comfy, size=(64, 64)))
    assert model.wav2vec2.config.num_hidden_layers == original.config.num_hidden_layers
    wave = torch.randn(1, 8000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = original(wave, output_hidden_states=True).hidden_states[-1]
        got = model.wav2vec2(wave, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(got, want, atol=2e-2, rtol=0)  # the file holds fp16 weights
