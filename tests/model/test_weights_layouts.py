"""Pure key mappings and layout detection, on the golden DiT's key/shape table (no tensor data read)."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open

from model.weights import (
    WeightLoadError,
    classify_content,
    convert_comfyui_to_wan,
    convert_diffusers_to_wan,
    detect_layout,
    diffusers_key_to_wan,
    infer_dit_config,
    strip_prefix,
)
from tests.helpers.weights_factory import to_diffusers


@pytest.fixture(scope="module")
def golden_shapes(golden_dir) -> dict[str, tuple[int, ...]]:
    with safe_open(str(golden_dir / "dit_weights.safetensors"), "pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


def test_strip_prefix_drops_only_the_prefix_and_keeps_values(golden_shapes):
    wrapped = {"model.diffusion_model." + k: v for k, v in golden_shapes.items()}
    wrapped["scaled_fp8"] = (0,)
    out = strip_prefix(wrapped, "model.diffusion_model.")
    assert set(out) == set(golden_shapes) | {"scaled_fp8"}
    assert all(out[k] == golden_shapes[k] for k in golden_shapes)


def test_diffusers_names_convert_back_to_reference_names(golden_shapes):
    diff = to_diffusers(golden_shapes)
    assert len(set(diff)) == len(golden_shapes)  # the test's own table is a bijection
    assert set(diff) != set(golden_shapes)  # and really renames things
    assert convert_diffusers_to_wan(diff) == golden_shapes


def test_diffusers_norm2_is_the_reference_norm3():
    assert diffusers_key_to_wan("blocks.7.norm2.weight") == "blocks.7.norm3.weight"
    assert diffusers_key_to_wan("blocks.7.attn2.norm_added_k.weight") == "blocks.7.cross_attn.norm_k_img.weight"
    assert diffusers_key_to_wan("scale_shift_table") == "head.modulation"
    assert diffusers_key_to_wan("blocks.3.scale_shift_table") == "blocks.3.modulation"
    assert diffusers_key_to_wan("blocks.3.audio_cross_attn.q_linear.weight") == "blocks.3.audio_cross_attn.q_linear.weight"


def test_comfyui_single_file_names_convert_to_reference(golden_shapes):
    comfy = {"model.diffusion_model." + k.replace("audio_proj.", "multitalk_audio_proj."): v
             for k, v in golden_shapes.items()}
    assert convert_comfyui_to_wan(comfy) == golden_shapes


@pytest.mark.parametrize(
    "prefix,diffusers",
    [("", False), ("model.diffusion_model.", False), ("diffusion_model.", False), ("model.", False),
     ("transformer.", True), ("", True), ("dit.", False)],
)
def test_detect_layout_finds_prefix_and_naming(golden_shapes, prefix, diffusers):
    keys = list(to_diffusers(golden_shapes) if diffusers else golden_shapes)
    keys = [prefix + k for k in keys]
    for targets in (set(golden_shapes), None):
        if targets is None and prefix == "dit.":
            continue  # an unknown wrapper is only found by matching the model's keys
        lay = detect_layout(keys, targets)
        assert lay.prefix == prefix
        assert lay.naming == ("diffusers" if diffusers else "reference")
        assert {lay.to_reference(k) for k in keys} == set(golden_shapes)
    assert lay.content == ("wan-base", "infinitetalk-adapter")


def test_unknown_layout_error_lists_sample_keys(golden_shapes):
    keys = ["foo.layer0.w", "foo.layer1.w", "bar.bias"]
    with pytest.raises(WeightLoadError, match=r"unknown checkpoint layout in x\.safetensors.*foo\.layer0\.w"):
        detect_layout(keys, set(golden_shapes), file="x.safetensors")


def test_content_classification_tells_base_adapter_vae_clip():
    assert classify_content(["blocks.0.self_attn.q.weight", "head.head.weight"]) == ("wan-base",)
    assert classify_content(["audio_proj.proj1.weight", "blocks.0.audio_cross_attn.proj.bias"]) == (
        "infinitetalk-adapter",
    )
    assert classify_content(["encoder.conv1.weight", "conv1.weight", "decoder.head.0.gamma"]) == ("vae",)
    assert classify_content(["visual.transformer.0.attn.to_qkv.weight"]) == ("clip",)


def test_infer_dit_config_reproduces_the_golden_config(golden_dir, golden_shapes):
    cfg = json.loads((golden_dir / "dit_config.json").read_text())
    got = infer_dit_config(golden_shapes, head_dim=cfg["dim"] // cfg["num_heads"], text_len=cfg["text_len"],
                           eps=cfg["eps"])
    assert got == cfg


def test_infer_dit_config_reads_comfyui_and_diffusers_names(golden_dir, golden_shapes):
    cfg = json.loads((golden_dir / "dit_config.json").read_text())
    hd = cfg["dim"] // cfg["num_heads"]
    ref = infer_dit_config(golden_shapes, head_dim=hd)
    assert infer_dit_config({"model.diffusion_model." + k: v for k, v in golden_shapes.items()}, head_dim=hd) == ref
    assert infer_dit_config(to_diffusers(golden_shapes), head_dim=hd) == ref


def test_infer_dit_config_defaults_to_wan_head_dim_128():
    shapes = {"patch_embedding.weight": (5120, 36, 1, 2, 2), "head.head.weight": (64, 5120),
              "blocks.0.ffn.0.weight": (13824, 5120), "text_embedding.0.weight": (5120, 4096),
              "time_embedding.0.weight": (5120, 256), "blocks.39.ffn.0.weight": (13824, 5120)}
    cfg = infer_dit_config(shapes)
    assert (cfg["num_heads"], cfg["num_layers"], cfg["out_dim"], cfg["model_type"]) == (40, 40, 16, "t2v")


def test_infer_dit_config_refuses_non_dit_shapes():
    with pytest.raises(WeightLoadError, match="not the weights of a Wan DiT"):
        infer_dit_config({"encoder.conv1.weight": (96, 3, 3, 3, 3)})


def test_inspect_describes_dit_vae_and_clip_files(golden_dir, capsys):
    from model.weights.inspect import describe_checkpoint, main

    cfg = json.loads((golden_dir / "dit_config.json").read_text())
    d = describe_checkpoint([golden_dir / "dit_weights.safetensors"], head_dim=cfg["dim"] // cfg["num_heads"])
    assert d["sources"][0]["content"] == ["wan-base", "infinitetalk-adapter"]
    assert d["dit_config"]["num_layers"] == cfg["num_layers"] and d["dit_config"]["dim"] == cfg["dim"]
    d = describe_checkpoint([golden_dir / "vae_weights.safetensors", golden_dir / "clip_weights.safetensors"])
    assert [s["content"] for s in d["sources"]] == [["vae"], ["clip"]]
    assert "dit_config" not in d
    assert main([str(golden_dir / "nope.safetensors")]) == 2
    assert "weight file not found" in capsys.readouterr().err
