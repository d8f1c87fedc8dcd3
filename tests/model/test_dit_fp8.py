"""fp8 linears: quantisation math, the emulated fp8 matmul within a worst-case bound of the float
linear, the DiT with fp8 block linears, and fp8 checkpoints loading straight into them (CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from model.dit import DiTConfig, InfiniteTalkDiT
from model.dit.fp8_linear import BLOCK_LINEARS, FP8Linear, quantize_linears_
from model.fp8 import fp8_error_bound, quantize_fp8
from model.weights import load_module

from ..helpers.model_family import dit_fp8_error, dit_inputs, random_dit

E4M3 = torch.float8_e4m3fn
CFG = DiTConfig.tiny()
# Whole-DiT error of fp8 block linears (row-wise activations) vs float32: no closed form (errors
# compound through the blocks), so from a sweep over random tiny DiTs (tests/bounds/model_bounds_sweep.py,
# docs/live_features.md): worst 0.067, grown by 25 %.
FP8_DIT_REL_MAX = 0.085


def _inputs(b: int = 1, frames: int = 2, h: int = 4, w: int = 4, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return dict(
        x=torch.randn(b, CFG.out_dim, frames, h, w, generator=g),
        t=torch.tensor([700.0] * b),
        context=torch.randn(b, 5, CFG.text_dim, generator=g),
        clip_fea=torch.randn(1, CFG.clip_tokens, CFG.clip_dim, generator=g),
        y=torch.randn(1, CFG.y_dim, frames, h, w, generator=g),
        audio=torch.randn(b, 1, CFG.video_frames(frames), CFG.audio_window, CFG.audio_layers, CFG.audio_width,
                          generator=g),
    )


@pytest.mark.parametrize("dim", [None, -1])
def test_quantize_round_trip_is_within_half_an_fp8_step(dim: int | None) -> None:
    x = torch.randn(16, 64) * torch.logspace(-3, 1, 16)[:, None]  # rows of very different magnitude
    q, scale = quantize_fp8(x, E4M3, dim=dim)
    assert q.dtype == E4M3 and scale.dtype == torch.float32
    assert scale.shape == (() if dim is None else (16, 1))
    back = q.float() * scale
    amax = x.abs().amax() if dim is None else x.abs().amax(dim=-1)
    assert torch.allclose(back.abs().amax() if dim is None else back.abs().amax(dim=-1), amax, rtol=0.07)
    for row in range(16):  # bound in the scaled domain, per row's scale
        s = scale if dim is None else scale[row, 0]
        bound = fp8_error_bound(x[row] / s, E4M3) * s
        assert ((back[row] - x[row]).abs() <= bound).all()


def _bound(x: torch.Tensor, w: torch.Tensor, bx: torch.Tensor, bw: torch.Tensor) -> torch.Tensor:
    """Worst case |x'w'^T - xw^T| for |x'-x| <= bx, |w'-w| <= bw elementwise (+ float32 slack)."""
    return x.abs() @ bw.T + bx @ w.abs().T + bx @ bw.T + 1e-5 * (x.abs() @ w.abs().T) + 1e-6


@pytest.mark.parametrize("activations", ["tensor", "row", "none"])
def test_fp8_linear_emulation_is_within_the_rounding_bound_of_the_float_linear(activations: str) -> None:
    torch.manual_seed(0)
    lin = nn.Linear(64, 48)
    x = torch.randn(3, 10, 64) * 2
    ref = lin(x).detach()
    fp8 = FP8Linear.from_linear(lin, activations)
    got = fp8(x)
    assert got.shape == ref.shape and got.dtype == x.dtype
    w = lin.weight.detach()
    bw = fp8_error_bound(w / fp8.weight_scale, E4M3) * fp8.weight_scale
    x2 = x.reshape(-1, 64)
    if activations == "none":
        bx = torch.zeros_like(x2)
    else:
        _, xs = quantize_fp8(x2, E4M3, dim=-1 if activations == "row" else None)
        bx = fp8_error_bound(x2 / xs, E4M3) * xs
    err = (got - ref).reshape(-1, 48).abs()
    assert (err <= _bound(x2, w, bx, bw)).all()
    assert err.max() > 0  # it really rounds


def test_quantised_dit_keeps_fp8_weights_through_dtype_casts_and_stays_close() -> None:
    model = InfiniteTalkDiT(CFG).init_random_weights_(seed=2).eval()
    inputs = _inputs()
    with torch.no_grad():
        ref = model(**inputs)
    n = quantize_linears_(model, activations="row")
    assert n == len(BLOCK_LINEARS) * CFG.num_layers
    model.to(torch.float32)  # a model-wide cast must leave the fp8 weights and fp32 scales alone
    lin = model.blocks[0].ffn[0]
    assert isinstance(lin, FP8Linear) and lin.weight.dtype == E4M3 and lin.weight_scale.dtype == torch.float32
    with torch.no_grad():
        got = model(**inputs)
    rel = (got - ref).norm() / ref.norm()
    assert torch.isfinite(got).all() and 0 < rel < FP8_DIT_REL_MAX, rel


@pytest.mark.parametrize(("seed", "sizes"), [(0, {}), (14, dict(dim=128, ffn_dim=256, num_heads=8, num_layers=3)),
                                             (14, dict(dim=64, ffn_dim=256, num_heads=2, num_layers=4))])
def test_fp8_dit_stays_close_for_other_seeds_and_sizes(seed: int, sizes: dict) -> None:
    cfg, model = random_dit(seed, **sizes)
    rel = dit_fp8_error(model, dit_inputs(cfg, seed=seed, w=4))
    assert 0 < rel < FP8_DIT_REL_MAX, rel


def _scaled_fp8_file(model: InfiniteTalkDiT, path: Path) -> dict[str, torch.Tensor]:
    """A ComfyUI-style scaled-fp8 checkpoint of `model` (block linears e4m3 + scale_weight), written here."""
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for i in range(CFG.num_layers):
        for name in BLOCK_LINEARS:
            key = f"blocks.{i}.{name}"
            w = sd[key + ".weight"]
            scale = w.abs().max() / 448.0
            sd[key + ".weight"] = (w / scale).to(E4M3)
            sd[key + ".scale_weight"] = scale.reshape(1)
    sd["scaled_fp8"] = torch.zeros(0, dtype=E4M3)
    save_file(sd, str(path))
    return sd


def test_scaled_fp8_checkpoint_loads_byte_for_byte_into_fp8_linears(tmp_path: Path) -> None:
    src = InfiniteTalkDiT(CFG).init_random_weights_(seed=4)
    file_sd = _scaled_fp8_file(src, tmp_path / "dit_fp8_scaled.safetensors")
    with torch.device("meta"):
        model = InfiniteTalkDiT(CFG)
    quantize_linears_(model)
    load_module(model, tmp_path / "dit_fp8_scaled.safetensors", dtype=torch.float32)
    got = model.state_dict()
    key = "blocks.1.self_attn.q"
    assert got[key + ".weight"].dtype == E4M3
    assert torch.equal(got[key + ".weight"].view(torch.uint8), file_sd[key + ".weight"].view(torch.uint8))
    assert got[key + ".weight_scale"].shape == () and torch.equal(got[key + ".weight_scale"],
                                                                    file_sd[key + ".scale_weight"][0])
    assert got["blocks.1.norm3.weight"].dtype == torch.float32
    with torch.no_grad():
        out = model(**_inputs())
    assert torch.isfinite(out).all()


def test_float_checkpoint_is_quantised_on_load_like_a_loaded_model(tmp_path: Path) -> None:
    src = InfiniteTalkDiT(CFG).init_random_weights_(seed=5)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "dit.safetensors"))
    with torch.device("meta"):
        model = InfiniteTalkDiT(CFG)
    quantize_linears_(model)
    report = load_module(model, tmp_path / "dit.safetensors", dtype=torch.float32)
    assert not report.missing
    w = src.blocks[0].cross_attn.k_img.weight.detach()
    got = model.blocks[0].cross_attn.k_img
    assert torch.allclose(got.weight_scale, w.abs().max() / 448.0)  # full e4m3 range used
    want = (w / got.weight_scale).to(E4M3)
    assert torch.equal(got.weight.view(torch.uint8), want.view(torch.uint8))


def test_load_infinitetalk_dit_builds_fp8_linears_from_a_scaled_fp8_file(tmp_path: Path) -> None:
    from model.infinitetalk.dit_loader import load_infinitetalk_dit

    src = InfiniteTalkDiT(CFG).init_random_weights_(seed=6)
    file_sd = _scaled_fp8_file(src, tmp_path / "dit.safetensors")
    model, report = load_infinitetalk_dit(tmp_path / "dit.safetensors", dtype=torch.float32, head_dim=CFG.head_dim,
                                          text_len=CFG.text_len, fp8_activations="row")
    lin = model.blocks[1].audio_cross_attn.kv_linear
    assert isinstance(lin, FP8Linear) and lin.activations == "row" and not report.missing
    assert torch.equal(lin.weight.view(torch.uint8), file_sd["blocks.1.audio_cross_attn.kv_linear.weight"].view(torch.uint8))


# ---- the CUDA fast path, with torch._scaled_mm stood in for (there is no fp8 GPU here) ----------

@pytest.mark.parametrize("rowwise", [False, True])
def test_the_two_pass_activation_quantiser_equals_the_reference_one(rowwise: bool) -> None:
    from model.dit.fp8_linear import quantize_activations

    x = (torch.randn(32, 64) * torch.logspace(-4, 2, 32)[:, None]).to(torch.bfloat16)
    q, s = quantize_activations(x, E4M3, rowwise)
    q_ref, s_ref = quantize_fp8(x, E4M3, dim=-1 if rowwise else None)
    assert torch.equal(s, s_ref) and torch.equal(q.view(torch.uint8), q_ref.view(torch.uint8))


def _fake_scaled_mm(calls: list, refuse_bias: bool = False, error: Exception | None = None):
    """torch._scaled_mm's arithmetic on the CPU (fp8 operands dequantised), recording each call."""

    def scaled_mm(a, b, *, scale_a, scale_b, bias=None, out_dtype, use_fast_accum=False):
        calls.append({"bias": bias is not None, "fast_accum": use_fast_accum, "scale_b": scale_b})
        if error is not None:
            raise error
        if refuse_bias and bias is not None:
            raise RuntimeError("Bias is not supported when out_dtype is set to Float32 with rowwise scaling")
        y = (a.float() * scale_a) @ (b.float() * scale_b)
        return (y + bias.float() if bias is not None else y).to(out_dtype)

    return scaled_mm


@pytest.fixture
def fast_path(monkeypatch):
    import model.dit.fp8_linear as fp8

    monkeypatch.setattr(fp8, "scaled_mm_available", lambda device: True)
    monkeypatch.setattr(fp8, "_BIAS_IN_EPILOGUE", {})
    calls: list = []
    return fp8, calls, lambda **kw: monkeypatch.setattr(torch, "_scaled_mm", _fake_scaled_mm(calls, **kw))


def test_the_fast_path_fuses_the_bias_and_makes_the_weight_scale_once(fast_path) -> None:
    fp8, calls, use = fast_path
    use()
    lin = FP8Linear.from_linear(nn.Linear(64, 48), activations="row")
    x = torch.randn(3, 5, 64, dtype=torch.bfloat16)
    torch.testing.assert_close(lin(x).float(), lin.emulate(x).float(), atol=2e-2, rtol=2e-2)
    lin(x)
    assert [c["bias"] for c in calls] == [True, True] and all(c["fast_accum"] for c in calls)
    assert calls[0]["scale_b"] is calls[1]["scale_b"]  # not rebuilt per call
    lin.weight_scale.mul_(2.0)
    lin(x)
    assert calls[2]["scale_b"] is not calls[1]["scale_b"] and float(calls[2]["scale_b"][0, 0]) == float(lin.weight_scale)


def test_a_kernel_without_bias_support_gets_the_bias_added_after_it(fast_path) -> None:
    fp8, calls, use = fast_path
    use(refuse_bias=True)
    lin = FP8Linear.from_linear(nn.Linear(64, 48), activations="row")
    x = torch.randn(4, 64, dtype=torch.bfloat16)
    torch.testing.assert_close(lin(x).float(), lin.emulate(x).float(), atol=2e-2, rtol=2e-2)
    lin(x)
    assert [c["bias"] for c in calls] == [True, False, False]  # probed once, then never fused again
    assert not lin._fast_failed


def test_out_of_memory_is_raised_and_does_not_switch_the_layer_to_emulation(fast_path) -> None:
    fp8, calls, use = fast_path
    use(error=torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    lin = FP8Linear.from_linear(nn.Linear(64, 48), activations="tensor")
    with pytest.raises(torch.OutOfMemoryError):
        lin(torch.randn(4, 64, dtype=torch.bfloat16))
    assert not lin._fast_failed
    use(error=RuntimeError("CUDA error: an illegal shape for this kernel"))
    x = torch.randn(4, 64, dtype=torch.bfloat16)
    assert torch.equal(lin(x), lin.emulate(x))  # a kernel that refuses the layer: emulated from now on
    assert lin._fast_failed
