"""CLIP vision tower port vs the reference's golden vectors (golden README section 4 and loop/)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from model.clip_vision import CLIPVisionConfig, CLIPVisionEncoder

TOL = {"atol": 1e-4, "rtol": 1e-4}  # golden README: DiT / CLIP / wav2vec outputs


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one thread avoids OpenMP hand-off costs on a shared 2-core box (speed only)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _config(path) -> CLIPVisionConfig:
    return CLIPVisionConfig.from_reference_kwargs(json.loads(path.read_text()))


@pytest.fixture(scope="module")
def golden(golden_dir):
    cfg = _config(golden_dir / "clip_config.json")
    weights = load_file(str(golden_dir / "clip_weights.safetensors"))
    case = load_file(str(golden_dir / "clip_case.safetensors"))
    return cfg, weights, case


def test_preprocess_matches_reference(golden):
    cfg, weights, case = golden
    enc = CLIPVisionEncoder.from_state_dict(cfg, weights)
    pixels = enc.preprocess(case["image"])
    torch.testing.assert_close(pixels, case["preprocessed"], **TOL)


def test_features_skip_last_block_and_match_reference(golden):
    cfg, weights, case = golden
    enc = CLIPVisionEncoder.from_state_dict(cfg, weights)
    assert len(enc.visual.transformer) == cfg.num_layers - 1
    feats = enc.encode_image(case["image"])
    assert feats.shape == (case["image"].shape[0], cfg.num_tokens, cfg.dim)
    torch.testing.assert_close(feats, case["features"], **TOL)


def test_all_blocks_output_matches_reference(golden):
    cfg, weights, case = golden
    enc = CLIPVisionEncoder.from_state_dict(cfg, weights, include_last_block=True)
    pixels = enc.preprocess(case["image"])
    torch.testing.assert_close(enc(pixels, all_blocks=True), case["features_all_blocks"], **TOL)
    torch.testing.assert_close(enc(pixels), case["features"], **TOL)


def test_batch_of_images_equals_single_images(golden):
    cfg, weights, case = golden
    enc = CLIPVisionEncoder.from_state_dict(cfg, weights)
    img = case["image"]
    both = enc.encode_image(torch.cat([img.flip(-1), img]))
    torch.testing.assert_close(both[1:], case["features"], **TOL)
    torch.testing.assert_close(both[:1], enc.encode_image(img.flip(-1)), **TOL)


def test_loader_ignores_text_tower_head_and_post_norm_but_not_unknown_keys(golden):
    cfg, weights, case = golden
    full = dict(weights)
    full["textual.token_embedding.weight"] = torch.zeros(4, 2)
    full["log_scale"] = torch.zeros(())
    enc = CLIPVisionEncoder.from_state_dict(cfg, full)
    assert not any(k.startswith(("textual", "log_scale")) for k in enc.required_keys())
    assert {"visual.head", "visual.post_norm.weight"}.isdisjoint(enc.required_keys())
    assert f"visual.transformer.{cfg.num_layers - 1}.attn.proj.weight" not in enc.required_keys()
    torch.testing.assert_close(enc.encode_image(case["image"]), case["features"], **TOL)

    with pytest.raises(ValueError, match="visual.bogus"):
        CLIPVisionEncoder.from_state_dict(cfg, {**weights, "visual.bogus": torch.zeros(1)})
    with pytest.raises(ValueError, match="visual.pos_embedding"):
        CLIPVisionEncoder.from_state_dict(cfg, {k: v for k, v in weights.items() if k != "visual.pos_embedding"})


def test_vit_h14_builds_on_meta_with_257_tokens():
    cfg = CLIPVisionConfig.vit_h14()
    with torch.device("meta"):
        enc = CLIPVisionEncoder(cfg)
        feats = enc(torch.empty(2, 3, cfg.image_size, cfg.image_size))
    assert feats.shape == (2, 257, 1280)
    keys = enc.required_keys()
    assert len(enc.visual.transformer) == 31 and not any(k.startswith("visual.transformer.31.") for k in keys)
    assert enc.state_dict()["visual.transformer.0.mlp.0.weight"].shape == (5120, 1280)
    assert enc.state_dict()["visual.patch_embedding.weight"].shape == (1280, 3, 14, 14)


def _loop_cases(loop_dir):
    cases = sorted(p.name.removesuffix(".clip_fea.safetensors") for p in loop_dir.glob("*.clip_fea.safetensors"))
    if not cases:
        pytest.fail(f"no *.clip_fea.safetensors in {loop_dir}")
    return cases


def test_loop_clip_without_blocks_reproduces_stored_window_features(golden_dir):
    loop = golden_dir / "loop"
    cfg = _config(loop / "clip_config.json")
    weights = load_file(str(loop / "clip_weights.safetensors"))
    enc = CLIPVisionEncoder.from_state_dict(cfg, weights)  # file omits blocks, post-norm and head
    assert len(enc.visual.transformer) == cfg.num_layers - 1
    checked = 0
    for case in _loop_cases(loop):
        expected = load_file(str(loop / f"{case}.clip_fea.safetensors"))
        with safe_open(str(loop / f"{case}.windows.safetensors"), "pt") as f:
            for key, want in expected.items():
                window = key.split(".")[0]
                image = f.get_tensor(f"{window}.cond_image")[None]
                torch.testing.assert_close(enc.encode_image(image), want, **TOL)
                checked += 1
    assert checked >= 1


def test_load_from_file_skips_text_tower(golden, tmp_path):
    from safetensors.torch import save_file

    from model.clip_vision import load_clip_vision

    cfg, weights, case = golden
    path = tmp_path / "clip_full.pth"
    torch.save({**weights, "textual.head.0.weight": torch.zeros(2, 2), "log_scale": torch.zeros(())}, path)
    enc = load_clip_vision(path, cfg)
    torch.testing.assert_close(enc.encode_image(case["image"]), case["features"], **TOL)
    save_file({"visual.cls_embedding": weights["visual.cls_embedding"]}, str(tmp_path / "partial.safetensors"))
    with pytest.raises(ValueError, match="partial.safetensors"):
        load_clip_vision(tmp_path / "partial.safetensors", cfg)
