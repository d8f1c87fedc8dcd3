"""End to end with the real DiT (model.dit): checkpoints in every layout, written from the golden weights,
load through load_module into a meta-built InfiniteTalkDiT and give the golden model's outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from model.dit import DiTConfig, InfiniteTalkDiT
from model.weights import LoraSpec, infer_dit_config, load_module, read_shapes
from tests.helpers.weights_factory import (
    adapter_only,
    base_only,
    cast,
    fp8_roundtrip,
    fp8_scaled,
    save,
    to_diffusers,
    with_prefix,
    write_sharded,
)


@pytest.fixture(scope="module")
def golden(golden_dir: Path):
    ref_kwargs = json.loads((golden_dir / "dit_config.json").read_text())
    weights = load_file(golden_dir / "dit_weights.safetensors")
    clip = load_file(golden_dir / "dit_clip_fea.safetensors")["clip_fea"]
    g = load_file(golden_dir / "dit_case_two.safetensors")
    inputs = dict(
        x=g["in.x"][None], t=g["in.t"], context=g["in.context"][None], clip_fea=clip, y=g["in.y"],
        audio=g["in.audio_frames"][:, g["in.audio_index"]][None], ref_target_masks=g["in.ref_target_masks"],
    )
    return ref_kwargs, weights, inputs, g["out"]


def build_meta(ref_kwargs: dict) -> InfiniteTalkDiT:
    with torch.device("meta"):
        return InfiniteTalkDiT(DiTConfig.from_reference_kwargs(ref_kwargs)).eval()


def run(model: InfiniteTalkDiT, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs)


def reference_output(ref_kwargs: dict, state: dict, inputs: dict) -> torch.Tensor:
    """The model filled by plain load_state_dict: what every layout must reproduce."""
    model = InfiniteTalkDiT(DiTConfig.from_reference_kwargs(ref_kwargs)).eval()
    model.load_state_dict(state, strict=True)
    return run(model, inputs)


def test_config_inferred_from_the_files_builds_the_golden_model(golden_dir, golden):
    ref_kwargs = golden[0]
    inferred = infer_dit_config(read_shapes(golden_dir / "dit_weights.safetensors"),
                                head_dim=ref_kwargs["dim"] // ref_kwargs["num_heads"], text_len=ref_kwargs["text_len"])
    assert DiTConfig.from_reference_kwargs(inferred) == DiTConfig.from_reference_kwargs(ref_kwargs)


LAYOUTS = {
    "wan-shards+infinitetalk-adapter": lambda w, d: [
        write_sharded(base_only(w), d / "Wan2.1-I2V-14B-480P", 3).parent, save(adapter_only(w), d / "infinitetalk.safetensors")],
    "comfyui-single-file": lambda w, d: [save(with_prefix(w, "model.diffusion_model."), d / "wan_comfy.safetensors")],
    "diffusers-base+adapter": lambda w, d: [
        save(to_diffusers(base_only(w)), d / "transformer.safetensors"), save(adapter_only(w), d / "it.safetensors")],
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_layout_gives_the_golden_output(layout, golden, tmp_path):
    ref_kwargs, weights, inputs, golden_out = golden
    model = build_meta(ref_kwargs)
    report = load_module(model, LAYOUTS[layout](weights, tmp_path))
    assert report.loaded == len(weights)
    assert not any(p.is_meta for p in model.parameters())
    out = run(model, inputs)
    assert torch.equal(out, reference_output(ref_kwargs, weights, inputs))
    assert torch.allclose(out, golden_out, atol=1e-4, rtol=1e-4)


def test_fp16_file_gives_the_output_of_the_fp16_rounded_weights(golden, tmp_path):
    ref_kwargs, weights, inputs, _ = golden
    half = cast(weights, torch.float16)
    model = build_meta(ref_kwargs)
    load_module(model, save(with_prefix(half, "model.diffusion_model."), tmp_path / "fp16.safetensors"), dtype=torch.float32)
    assert torch.equal(run(model, inputs), reference_output(ref_kwargs, cast(half, torch.float32), inputs))


def test_fp8_scaled_file_gives_the_output_of_the_dequantized_weights(golden, tmp_path):
    ref_kwargs, weights, inputs, golden_out = golden
    model = build_meta(ref_kwargs)
    load_module(model, save(fp8_scaled(weights, torch.float8_e4m3fn, "legacy"), tmp_path / "fp8.safetensors"),
                dtype=torch.float32)
    out = run(model, inputs)
    deq = fp8_roundtrip(weights, torch.float8_e4m3fn, scaled=True)
    assert torch.equal(out, reference_output(ref_kwargs, deq, inputs))
    assert not torch.allclose(out, golden_out, atol=1e-6, rtol=0)  # fp8 did change the weights


def test_lora_merged_at_load_equals_merging_by_hand(golden, tmp_path):
    ref_kwargs, weights, inputs, _ = golden
    g = torch.Generator().manual_seed(0)
    merged = dict(weights)
    lora = {}
    for m in ("blocks.0.self_attn.q", "blocks.1.audio_cross_attn.kv_linear", "blocks.0.ffn.0"):
        w = weights[m + ".weight"]
        up, down = torch.randn(w.shape[0], 4, generator=g) * 0.1, torch.randn(4, w.shape[1], generator=g) * 0.1
        lora[f"diffusion_model.{m}.lora_up.weight"], lora[f"diffusion_model.{m}.lora_down.weight"] = up, down
        lora[f"diffusion_model.{m}.alpha"] = torch.tensor(2.0)
        merged[m + ".weight"] = w + 0.8 * (2.0 / 4) * (up @ down)
    d = torch.randn(weights["blocks.1.norm3.weight"].shape, generator=g) * 0.1
    lora["diffusion_model.blocks.1.norm3.diff"] = d
    merged["blocks.1.norm3.weight"] = weights["blocks.1.norm3.weight"] + 0.8 * d
    model = build_meta(ref_kwargs)
    load_module(model, save(weights, tmp_path / "m.safetensors"),
                loras=[LoraSpec(save(lora, tmp_path / "lightx2v_like.safetensors"), strength=0.8)])
    assert torch.allclose(run(model, inputs), reference_output(ref_kwargs, merged, inputs), atol=1e-5, rtol=1e-5)


def test_bf16_load_equals_casting_the_loaded_model(golden, tmp_path):
    ref_kwargs, weights, _, _ = golden
    model = build_meta(ref_kwargs)
    load_module(model, save(weights, tmp_path / "m.safetensors"), dtype=torch.bfloat16)
    for k, v in model.state_dict().items():
        assert v.dtype == torch.bfloat16 and torch.equal(v, weights[k].to(torch.bfloat16)), k


def test_load_infinitetalk_dit_builds_and_fills_the_model_from_files_alone(golden, tmp_path):
    from model.infinitetalk.dit_loader import load_infinitetalk_dit

    ref_kwargs, weights, inputs, golden_out = golden
    sources = LAYOUTS["wan-shards+infinitetalk-adapter"](weights, tmp_path)
    model, report = load_infinitetalk_dit(sources, dtype=torch.float32,
                                          head_dim=ref_kwargs["dim"] // ref_kwargs["num_heads"],
                                          text_len=ref_kwargs["text_len"])
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert report.loaded == len(weights)
    assert torch.allclose(run(model, inputs), golden_out, atol=1e-4, rtol=1e-4)
