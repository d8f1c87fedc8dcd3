"""Every checkpoint layout loads, through load_module, to the same tensors as the fp32 reference."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from model.fp8 import fp8_error_bound
from model.weights import LoadReport, load_module, open_source
from tests.helpers.tiny_wan import TinyWanConfig, meta_model, reference_state
from tests.helpers.weights_factory import (
    adapter_only,
    base_only,
    cast,
    fp8_plain,
    fp8_roundtrip,
    fp8_scaled,
    save,
    to_diffusers,
    with_prefix,
    write_sharded,
)

CFG = TinyWanConfig()


@pytest.fixture(scope="module")
def ref() -> dict[str, torch.Tensor]:
    return reference_state(CFG, seed=1)


def loaded_state(sources, **kw) -> tuple[dict[str, torch.Tensor], LoadReport]:
    m = meta_model(CFG)
    report = load_module(m, sources, **kw)
    return {k: v.detach() for k, v in m.state_dict().items()}, report


def assert_same(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        assert torch.equal(got[k], want[k]), k


# ---- exact layouts ---------------------------------------------------------------------------------

def _sharded_folder(ref, tmp):
    write_sharded(ref, tmp / "Wan2.1-I2V-14B-480P", 3)
    return tmp / "Wan2.1-I2V-14B-480P"


def _sharded_index(ref, tmp):
    return write_sharded(ref, tmp / "w", 3)


LAYOUTS = {
    "original-sharded-folder": _sharded_folder,
    "original-sharded-index": _sharded_index,
    "single-file": lambda ref, tmp: save(ref, tmp / "model.safetensors"),
    "comfyui-model.diffusion_model": lambda ref, tmp: save(
        with_prefix(ref, "model.diffusion_model."), tmp / "wan2.1_i2v_480p_14B_fp32.safetensors"),
    "diffusion_model-prefix": lambda ref, tmp: save(with_prefix(ref, "diffusion_model."), tmp / "m.safetensors"),
    "diffusers-names": lambda ref, tmp: write_sharded(to_diffusers(ref), tmp / "transformer", 2),
    "torch-pth": lambda ref, tmp: (torch.save({"state_dict": ref}, tmp / "m.pth"), tmp / "m.pth")[1],
    "folder-of-files": lambda ref, tmp: (
        save(base_only(ref), tmp / "f" / "a.safetensors"), save(adapter_only(ref), tmp / "f" / "b.safetensors"),
        tmp / "f")[2],
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layout_loads_bit_identical_fp32(layout, ref, tmp_path):
    src = LAYOUTS[layout](ref, tmp_path)
    got, report = loaded_state(src)
    assert_same(got, ref)
    assert report.loaded == len(ref)
    assert report.bytes_read == sum(v.numel() * 4 for v in ref.values())


def test_infinitetalk_adapter_merges_into_a_base_without_it(ref, tmp_path):
    base = write_sharded(base_only(ref), tmp_path / "Wan2.1-I2V-14B-480P", 3)
    adapter = save(adapter_only(ref), tmp_path / "InfiniteTalk" / "single" / "infinitetalk.safetensors")
    got, report = loaded_state([base.parent, adapter])
    assert_same(got, ref)
    assert report.overridden == ()
    assert any("infinitetalk-adapter" in lay and "wan-base" not in lay for lay in report.layouts)


def test_comfyui_base_plus_bare_adapter_mix_prefixes(ref, tmp_path):
    base = save(with_prefix(base_only(ref), "model.diffusion_model."), tmp_path / "wan2.1_i2v_480p_14B_fp16.safetensors")
    adapter = save({k.replace("audio_proj.", "multitalk_audio_proj."): v for k, v in adapter_only(ref).items()},
                   tmp_path / "Wan2_1-InfiniteTalk-Single_fp16.safetensors")
    got, _ = loaded_state([base, adapter])
    assert_same(got, ref)


def test_a_fully_merged_release_overrides_the_base(ref, tmp_path):
    other = reference_state(CFG, seed=2)
    base = write_sharded(base_only(other), tmp_path / "base", 2)
    merged = save(ref, tmp_path / "infinitetalk_merged.safetensors")
    got, report = loaded_state([base, merged])
    assert_same(got, ref)  # later source wins, key by key
    assert set(report.overridden) == set(base_only(ref))


# ---- dtypes ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("file_dtype", [torch.float16, torch.bfloat16])
def test_half_precision_files_load_exactly(file_dtype, ref, tmp_path):
    half = cast(ref, file_dtype)
    path = save(with_prefix(half, "model.diffusion_model."), tmp_path / "m.safetensors")
    got, _ = loaded_state(path)  # module is fp32: the half values widen exactly
    assert_same(got, {k: v.float() for k, v in half.items()})
    got, report = loaded_state(path, dtype=file_dtype)
    assert_same(got, half)
    assert report.dtypes == {str(file_dtype)[6:]: len(ref)}


def test_fp32_file_to_bf16_matches_a_plain_cast(ref, tmp_path):
    path = save(ref, tmp_path / "m.safetensors")
    got, _ = loaded_state(path, dtype=torch.bfloat16)
    assert_same(got, cast(ref, torch.bfloat16))


def test_keep_fp32_keeps_norms_and_modulation(ref, tmp_path):
    path = save(ref, tmp_path / "m.safetensors")
    got, _ = loaded_state(path, dtype=torch.bfloat16, keep_fp32=("modulation", "norm"))
    m = meta_model(CFG)
    norm_params = {f"{n}.{p}" for n, mod in m.named_modules() if isinstance(mod, torch.nn.LayerNorm)
                   for p in ("weight", "bias")}
    kept = {k for k in ref if k.endswith("modulation") or ".norm_" in k or k in norm_params}
    assert "img_emb.proj.0.weight" in kept and "blocks.0.norm_x.bias" in kept
    for k in ref:
        want = ref[k] if k in kept else ref[k].to(torch.bfloat16)
        assert got[k].dtype == want.dtype and torch.equal(got[k], want), k


# ---- fp8 -------------------------------------------------------------------------------------------

FP8_CASES = {
    "e4m3fn": (torch.float8_e4m3fn, False, None),
    "e5m2": (torch.float8_e5m2, False, None),
    "e4m3fn-scaled-legacy": (torch.float8_e4m3fn, True, "legacy"),
    "e4m3fn-scaled-kijai": (torch.float8_e4m3fn, True, "kijai"),
    "e4m3fn-comfy-quant": (torch.float8_e4m3fn, True, "comfy"),
    "e5m2-scaled-legacy": (torch.float8_e5m2, True, "legacy"),
}


@pytest.mark.parametrize("case", list(FP8_CASES))
def test_fp8_files_dequantize_within_fp8_precision(case, ref, tmp_path):
    fmt, scaled, style = FP8_CASES[case]
    sd = fp8_scaled(ref, fmt, style) if scaled else fp8_plain(ref, fmt)
    path = save(with_prefix(sd, "model.diffusion_model."), tmp_path / "m_fp8.safetensors")
    got, report = loaded_state(path)
    assert report.loaded == len(ref)
    assert_same(got, fp8_roundtrip(ref, fmt, scaled))  # exact dequantisation...
    for k, want in ref.items():  # ...which is within fp8 rounding of the fp32 original
        s = float(want.abs().max() / torch.finfo(fmt).max) if scaled else 1.0
        err = (got[k] - want).abs()
        assert bool((err <= fp8_error_bound(want, fmt, s)).all()), k
    quantized = [k for k in ref if ref[k].ndim == 2 and k.endswith(".weight")]
    assert any(not torch.equal(got[k], ref[k]) for k in quantized)  # fp8 really lost precision


def test_fp8_to_bf16_is_the_bf16_of_the_dequantized_value(ref, tmp_path):
    path = save(fp8_scaled(ref, torch.float8_e4m3fn, "legacy"), tmp_path / "m.safetensors")
    got, _ = loaded_state(path, dtype=torch.bfloat16)
    assert_same(got, cast(fp8_roundtrip(ref, torch.float8_e4m3fn, True), torch.bfloat16))


def test_fp8_storage_dtype_keeps_only_linear_weights_in_fp8(ref, tmp_path):
    path = save(ref, tmp_path / "m.safetensors")
    got, report = loaded_state(path, dtype=torch.float8_e4m3fn)
    m = meta_model(CFG)
    linear = {f"{n}.weight" for n, mod in m.named_modules() if isinstance(mod, torch.nn.Linear)}
    for k, v in got.items():
        if k in linear:
            assert v.dtype == torch.float8_e4m3fn and torch.equal(v, ref[k].to(torch.float8_e4m3fn)), k
        else:
            assert v.dtype == torch.bfloat16, k
    assert report.dtypes == {"float8_e4m3fn": len(linear), "bfloat16": len(ref) - len(linear)}


# ---- the golden weights ----------------------------------------------------------------------------

def test_golden_dit_weights_load_through_every_reader(golden_dir):
    import json

    cfg = json.loads((golden_dir / "dit_config.json").read_text())
    c = TinyWanConfig(dim=cfg["dim"], ffn_dim=cfg["ffn_dim"], num_layers=cfg["num_layers"], in_dim=cfg["in_dim"],
                      out_dim=cfg["out_dim"], text_dim=cfg["text_dim"], freq_dim=cfg["freq_dim"], img_dim=1280,
                      audio_window=cfg["audio_window"], vae_scale=cfg["vae_scale"],
                      intermediate_dim=cfg["intermediate_dim"], output_dim=cfg["output_dim"],
                      context_tokens=cfg["context_tokens"])
    path = golden_dir / "dit_weights.safetensors"
    with safe_open(str(path), "pt") as f:
        want = {k: f.get_tensor(k).clone() for k in f.keys()}
    for reader in ("pread", "mmap"):
        m = meta_model(c)
        load_module(m, path, reader=reader, read_ahead=reader == "pread")
        assert_same({k: v.detach() for k, v in m.state_dict().items()}, want)


def test_sources_read_lazily_and_own_their_memory(ref, tmp_path):
    path = save(ref, tmp_path / "m.safetensors")
    src = open_source(path)
    k = "blocks.0.self_attn.q.weight"
    assert src.info(k).shape == tuple(ref[k].shape) and src.info(k).dtype == torch.float32
    t = src.read(k)
    src.close()
    t += 1  # owned, writable, valid after the file is closed
    assert torch.equal(t, ref[k] + 1)
    assert isinstance(Path(src.name), Path)


def test_tied_weights_stay_tied_and_are_read_once(tmp_path):
    class Tied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Linear(4, 3, bias=False)
            self.head = torch.nn.Linear(4, 3, bias=False)
            self.head.weight = self.embed.weight

    w = torch.randn(3, 4)
    path = save({"embed.weight": w, "head.weight": w.clone()}, tmp_path / "tied.safetensors")
    with torch.device("meta"):
        m = Tied()
    report = load_module(m, path)
    assert m.head.weight is m.embed.weight and torch.equal(m.head.weight, w)
    assert report.bytes_read == w.numel() * 4


def test_submodel_of_a_bigger_checkpoint_is_found_by_its_wrapper(tmp_path):
    """A CLIP-like file (visual.* + textual.* + log_scale) loads into a vision-only module."""
    vis = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    want = {k: torch.randn(v.shape) for k, v in vis.state_dict().items()}
    sd = {"visual." + k: v for k, v in want.items()}
    sd.update({"textual.embed.weight": torch.randn(5, 4), "log_scale": torch.tensor(1.0)})
    with torch.device("meta"):
        m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    report = load_module(m, save(sd, tmp_path / "clip.safetensors"))
    assert_same({k: v.detach() for k, v in m.state_dict().items()}, want)
    assert set(report.ignored) == {"textual.embed.weight", "log_scale"}
