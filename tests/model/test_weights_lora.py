"""LoRA files in every naming style merge into the weights as strength * scale * up @ down (+ diffs)."""

from __future__ import annotations

import pytest
import torch

from model.weights import LoraSpec, WeightLoadError, load_module
from tests.helpers.tiny_wan import TinyWanConfig, meta_model, reference_state
from tests.helpers.weights_factory import fp8_scaled, save, to_diffusers, with_prefix

CFG = TinyWanConfig()
RANK = 3
MODULES = ["blocks.0.self_attn.q", "blocks.1.cross_attn.k_img", "blocks.0.ffn.2", "blocks.1.audio_cross_attn.kv_linear",
           "head.head", "patch_embedding"]


@pytest.fixture(scope="module")
def ref() -> dict[str, torch.Tensor]:
    return reference_state(CFG, seed=3)


@pytest.fixture(scope="module")
def base(ref, tmp_path_factory):
    return save(with_prefix(ref, "model.diffusion_model."), tmp_path_factory.mktemp("base") / "base.safetensors")


def make_pairs(ref, seed=0):
    """module -> (up [out, r, *1], down [r, in, *k]); conv weights get conv-shaped factors."""
    g = torch.Generator().manual_seed(seed)
    pairs = {}
    for m in MODULES:
        w = ref[m + ".weight"]
        up = torch.randn(w.shape[0], RANK, *([1] * (w.ndim - 2)), generator=g)
        down = torch.randn(RANK, *w.shape[1:], generator=g) * 0.1
        pairs[m] = (up, down)
    return pairs


def expected(ref, pairs, strength, scale_of, diffs=None):
    out = dict(ref)
    for m, (up, down) in pairs.items():
        w = ref[m + ".weight"]
        out[m + ".weight"] = w + strength * scale_of(m) * (up.flatten(1) @ down.flatten(1)).reshape(w.shape)
    for k, d in (diffs or {}).items():
        out[k] = out[k] + strength * d.reshape(out[k].shape)
    return out


def write_lora(pairs, style, path, alpha=None, diffs=None):
    sd = {}
    for m, (up, down) in pairs.items():
        if style == "kohya":
            n = "lora_unet_" + m.replace(".", "_")
            sd[n + ".lora_up.weight"], sd[n + ".lora_down.weight"] = up, down
        elif style == "dotted":
            n = "diffusion_model." + m
            sd[n + ".lora_up.weight"], sd[n + ".lora_down.weight"] = up, down
        elif style == "peft":
            n = "base_model.model." + m
            sd[n + ".lora_B.weight"], sd[n + ".lora_A.weight"] = up, down
        elif style == "peft-diffusers":
            n = "transformer." + next(iter(to_diffusers({m + ".weight": 0})))[: -len(".weight")]
            sd[n + ".lora_B.weight"], sd[n + ".lora_A.weight"] = up, down
        if alpha is not None:
            sd[n + ".alpha"] = torch.tensor(float(alpha))
    for k, d in (diffs or {}).items():
        if k.endswith(".modulation"):
            sd["diffusion_model." + k + ".diff"] = d
        elif k.endswith(".bias"):
            sd["diffusion_model." + k[: -len(".bias")] + ".diff_b"] = d
        else:
            sd["diffusion_model." + k[: -len(".weight")] + ".diff"] = d
    return save(sd, path)


def load(base, loras, **kw):
    m = meta_model(CFG)
    report = load_module(m, base, loras=loras, **kw)
    return {k: v.detach() for k, v in m.state_dict().items()}, report


def assert_close(got, want):
    for k in want:
        assert torch.allclose(got[k], want[k], atol=1e-5, rtol=1e-5), k


@pytest.mark.parametrize("style", ["kohya", "dotted", "peft", "peft-diffusers"])
def test_each_naming_style_merges_up_at_down(style, ref, base, tmp_path):
    pairs = make_pairs(ref)
    lora = write_lora(pairs, style, tmp_path / f"{style}.safetensors")
    got, report = load(base, [LoraSpec(lora, strength=0.7)])
    assert_close(got, expected(ref, pairs, 0.7, lambda m: 1.0))
    changed = {k for k in ref if not torch.equal(got[k], ref[k])}
    assert changed == {m + ".weight" for m in MODULES}
    assert report.loras == (f"{style}.safetensors: {len(MODULES)} patches on {len(MODULES)} tensors, strength 0.7",)


def test_alpha_scales_by_alpha_over_rank_unless_told_not_to(ref, base, tmp_path):
    pairs = make_pairs(ref, seed=1)
    lora = write_lora(pairs, "kohya", tmp_path / "a.safetensors", alpha=1.5)
    got, _ = load(base, [LoraSpec(lora, strength=2.0)])
    assert_close(got, expected(ref, pairs, 2.0, lambda m: 1.5 / RANK))
    got, _ = load(base, [LoraSpec(lora, strength=2.0, use_alpha=False)])  # InfiniteTalk's own wan_lora.py
    assert_close(got, expected(ref, pairs, 2.0, lambda m: 1.0))


def test_diff_and_diff_b_add_full_deltas(ref, base, tmp_path):
    g = torch.Generator().manual_seed(5)
    diffs = {k: torch.randn(ref[k].shape, generator=g) for k in
             ("blocks.0.norm3.weight", "blocks.1.self_attn.o.bias", "head.head.bias", "blocks.1.modulation",
              "blocks.0.self_attn.norm_q.weight")}
    pairs = make_pairs(ref, seed=2)
    lora = write_lora(pairs, "dotted", tmp_path / "lightx2v_like.safetensors", diffs=diffs)
    got, _ = load(base, [LoraSpec(lora, strength=0.5)])
    assert_close(got, expected(ref, pairs, 0.5, lambda m: 1.0, diffs))


def test_wrapper_diff_m_names_the_block_modulation(ref, base, tmp_path):
    d = torch.randn(ref["blocks.0.modulation"].shape)
    lora = save({"diffusion_model.blocks.0.diff_m": d}, tmp_path / "m.safetensors")
    got, _ = load(base, [lora])
    assert torch.allclose(got["blocks.0.modulation"], ref["blocks.0.modulation"] + d)


def test_two_loras_stack_and_merge_into_a_scaled_fp8_base(ref, tmp_path):
    fp8 = save(fp8_scaled(ref, torch.float8_e4m3fn, "legacy"), tmp_path / "fp8.safetensors")
    p1, p2 = make_pairs(ref, seed=3), make_pairs(ref, seed=4)
    l1 = write_lora(p1, "kohya", tmp_path / "1.safetensors")
    l2 = write_lora(p2, "peft", tmp_path / "2.safetensors")
    plain, _ = load(fp8, [])
    got, _ = load(fp8, [LoraSpec(l1, 1.0), LoraSpec(l2, -0.5)])
    want = expected(expected(plain, p1, 1.0, lambda m: 1.0), p2, -0.5, lambda m: 1.0)
    assert_close(got, want)


def test_lora_with_unknown_keys_is_refused_unless_not_strict(ref, base, tmp_path):
    pairs = make_pairs(ref)
    sd = {"diffusion_model." + m + s: t for m, (u, d) in pairs.items()
          for s, t in ((".lora_up.weight", u), (".lora_down.weight", d))}
    sd["diffusion_model.blocks.9.self_attn.q.lora_up.weight"] = torch.zeros(CFG.dim, RANK)
    sd["diffusion_model.blocks.9.self_attn.q.lora_down.weight"] = torch.zeros(RANK, CFG.dim)
    lora = save(sd, tmp_path / "extra.safetensors")
    with pytest.raises(WeightLoadError, match=r"extra\.safetensors: 2 of its 14 keys match no weight.*blocks\.9"):
        load(base, [lora])
    got, _ = load(base, [LoraSpec(lora, strict=False)])
    assert_close(got, expected(ref, pairs, 1.0, lambda m: 1.0))


def test_lora_for_another_model_size_is_refused_with_the_shapes(ref, base, tmp_path):
    lora = save({"diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.zeros(2 * CFG.dim, RANK),
                 "diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.zeros(RANK, 2 * CFG.dim)},
                tmp_path / "big.safetensors")
    with pytest.raises(WeightLoadError, match=r"does not fit blocks\.0\.self_attn\.q\.weight \[16, 16\]"):
        load(base, [lora])


def test_lora_matching_nothing_is_refused(base, tmp_path):
    lora = save({"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.zeros(4, 2),
                 "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(2, 4)},
                tmp_path / "sdxl.safetensors")
    with pytest.raises(WeightLoadError, match="none of its 2 keys match a weight of the model"):
        load(base, [lora])


def test_dora_is_refused_clearly(ref, base, tmp_path):
    up, down = make_pairs(ref)["blocks.0.self_attn.q"]
    lora = save({"diffusion_model.blocks.0.self_attn.q.lora_up.weight": up,
                 "diffusion_model.blocks.0.self_attn.q.lora_down.weight": down,
                 "diffusion_model.blocks.0.self_attn.q.dora_scale": torch.ones(1, CFG.dim)}, tmp_path / "d.safetensors")
    with pytest.raises(WeightLoadError, match="DoRA"):
        load(base, [lora])
