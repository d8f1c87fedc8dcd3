"""Broken, incomplete or mismatched checkpoints fail with ONE clear WeightLoadError naming files and keys."""

from __future__ import annotations

import json

import pytest
import torch

from model.weights import WeightLoadError, load_module, verify_files, write_manifest
from model.weights.checksums import MANIFEST_NAME
from tests.helpers.tiny_wan import TinyWanConfig, meta_model, reference_state
from tests.helpers.weights_factory import adapter_only, base_only, save, with_prefix, write_sharded

CFG = TinyWanConfig()


@pytest.fixture(scope="module")
def ref() -> dict[str, torch.Tensor]:
    return reference_state(CFG, seed=4)


def load(sources, cfg=CFG, **kw):
    return load_module(meta_model(cfg), sources, **kw)


def test_weight_load_error_is_a_value_error():
    assert issubclass(WeightLoadError, ValueError)


def test_truncated_file_names_the_file(ref, tmp_path):
    path = save(ref, tmp_path / "diffusion_pytorch_model.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(WeightLoadError, match=r"diffusion_pytorch_model\.safetensors is corrupted or truncated"):
        load(path)


@pytest.mark.parametrize("garbage", [b"", b"\x05\x00", b"\xff" * 64, b"\x10\x00\x00\x00\x00\x00\x00\x00not json!!!!!!!!"])
def test_garbage_file_names_the_file(garbage, tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(garbage)
    with pytest.raises(WeightLoadError, match=r"broken\.safetensors is corrupted or truncated"):
        load(path)


def test_corrupted_torch_file_names_the_file(tmp_path):
    path = tmp_path / "Wan2.1_VAE.pth"
    path.write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(WeightLoadError, match=r"cannot read .*Wan2\.1_VAE\.pth"):
        load(path)


def test_plain_wan_base_says_to_add_the_infinitetalk_adapter(ref, tmp_path):
    index = write_sharded(base_only(ref), tmp_path / "Wan2.1-I2V-14B-480P", 2)
    with pytest.raises(WeightLoadError) as ei:
        load(index.parent)
    msg = str(ei.value)
    assert "diffusion_pytorch_model-00001-of-00002.safetensors" in msg
    assert f"{len(adapter_only(ref))} missing, 0 unexpected, 0 wrong-shaped" in msg
    assert "plain Wan2.1 I2V checkpoint" in msg and "--infinitetalk" in msg
    assert set(ei.value.missing) == set(adapter_only(ref))


def test_adapter_alone_says_to_add_the_base(ref, tmp_path):
    path = save(adapter_only(ref), tmp_path / "infinitetalk.safetensors")
    with pytest.raises(WeightLoadError, match=r"only the InfiniteTalk audio adapter.*Wan2\.1-I2V-14B base"):
        load(path)


def test_wrong_size_model_names_the_shapes_before_reading_anything(ref, tmp_path):
    path = save(with_prefix(ref, "model.diffusion_model."), tmp_path / "m.safetensors")
    bigger = TinyWanConfig(dim=2 * CFG.dim)
    with pytest.raises(WeightLoadError) as ei:
        load(path, cfg=bigger)
    msg = str(ei.value)
    assert "wrong shape: " in msg and "checkpoint [16" in msg and "vs model [32" in msg
    assert "infer_dit_config" in msg


def test_fewer_blocks_than_the_model_says_so(ref, tmp_path):
    path = save(ref, tmp_path / "m.safetensors")
    with pytest.raises(WeightLoadError, match="has 2 transformer blocks but the model was built with 3"):
        load(path, cfg=TinyWanConfig(num_layers=3))


def test_unexpected_keys_fail_strict_and_are_reported_otherwise(ref, tmp_path):
    extra = dict(ref, **{"textual.head.weight": torch.zeros(2), "log_scale": torch.zeros(())})
    path = save(extra, tmp_path / "clip_like.safetensors")
    with pytest.raises(WeightLoadError, match=r"(?s)0 missing, 2 unexpected.*textual\.head\.weight"):
        load(path)
    report = load(path, strict=False)
    assert set(report.ignored) == {"textual.head.weight", "log_scale"}
    report = load(path, ignore=("textual.", "log_scale"))
    assert set(report.ignored) == {"textual.head.weight", "log_scale"}


def test_all_in_one_comfyui_file_skips_the_other_models(ref, tmp_path):
    sd = with_prefix(ref, "model.diffusion_model.")
    sd["first_stage_model.decoder.conv_in.weight"] = torch.zeros(3)
    sd["cond_stage_model.t5xxl.shared.weight"] = torch.zeros(3)
    report = load(save(sd, tmp_path / "aio.safetensors"))
    assert set(report.ignored) == {"first_stage_model.decoder.conv_in.weight", "cond_stage_model.t5xxl.shared.weight"}
    sd["model.diffusion_model.blocks.0.extra.weight"] = torch.zeros(3)  # inside the model prefix: really unexpected
    with pytest.raises(WeightLoadError, match=r"1 unexpected"):
        load(save(sd, tmp_path / "aio2.safetensors"))


def test_missing_keys_non_strict_stay_on_meta_and_are_reported(ref, tmp_path):
    path = save(base_only(ref), tmp_path / "m.safetensors")
    m = meta_model(CFG)
    report = load_module(m, path, strict=False)
    assert set(report.missing) == set(adapter_only(ref))
    assert m.audio_proj.proj1.weight.is_meta and not m.head.head.weight.is_meta


def test_missing_shard_file_is_named(ref, tmp_path):
    index = write_sharded(ref, tmp_path / "w", 3)
    (index.parent / "diffusion_pytorch_model-00002-of-00003.safetensors").unlink()
    with pytest.raises(WeightLoadError, match=r"1 are missing.*diffusion_pytorch_model-00002-of-00003"):
        load(index.parent)


def test_index_that_disagrees_with_its_shards(ref, tmp_path):
    index = write_sharded(ref, tmp_path / "w", 2)
    j = json.loads(index.read_text())
    j["weight_map"]["blocks.0.ffn.0.weight"] = "diffusion_pytorch_model-00002-of-00002.safetensors"
    j["weight_map"]["head.head.weight"] = "diffusion_pytorch_model-00001-of-00002.safetensors"
    index.write_text(json.dumps(j))
    with pytest.raises(WeightLoadError, match="disagree"):
        load(index)


def test_gguf_and_quanto_files_are_refused_with_what_to_use(tmp_path):
    gguf = tmp_path / "wan.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(WeightLoadError, match="GGUF"):
        load(gguf)
    quanto = save({"blocks.0.self_attn.q.weight._data": torch.zeros(2, 2, dtype=torch.int8),
                   "blocks.0.self_attn.q.weight._scale": torch.ones(2, 1)}, tmp_path / "infinitetalk_single_fp8.safetensors")
    with pytest.raises(WeightLoadError, match="optimum-quanto"):
        load(quanto)


def test_unsupported_comfy_quant_format_is_refused(ref, tmp_path):
    sd = dict(ref)
    sd["blocks.0.self_attn.q.comfy_quant"] = torch.tensor(list(b'{"format": "nvfp4"}'), dtype=torch.uint8)
    with pytest.raises(WeightLoadError, match="'nvfp4'"):
        load(save(sd, tmp_path / "m.safetensors"))


def test_two_folder_files_with_the_same_tensor(ref, tmp_path):
    save(ref, tmp_path / "f" / "a.safetensors")
    save(base_only(ref), tmp_path / "f" / "b.safetensors")
    with pytest.raises(WeightLoadError, match=r"in both .*a\.safetensors and .*b\.safetensors"):
        load(tmp_path / "f")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(WeightLoadError, match="weight file not found: .*nope.safetensors"):
        load(tmp_path / "nope.safetensors")


# ---- checksums -------------------------------------------------------------------------------------

def test_manifest_refuses_changed_and_truncated_files(ref, tmp_path):
    index = write_sharded(ref, tmp_path / "w", 2)
    shards = sorted(index.parent.glob("*.safetensors"))
    manifest = write_manifest(shards, index.parent / MANIFEST_NAME)
    assert set(manifest["files"]) == {s.name for s in shards}
    verify_files(shards, index.parent / MANIFEST_NAME)  # unchanged: fine

    data = bytearray(shards[0].read_bytes())
    data[-3] ^= 0xFF  # same size, one flipped byte inside a tensor: still a valid safetensors file
    shards[0].write_bytes(bytes(data))
    with pytest.raises(WeightLoadError, match="different sha256"):
        verify_files(shards, index.parent / MANIFEST_NAME)
    verify_files(shards, index.parent / MANIFEST_NAME, full=False)  # the size-only check cannot see it

    shards[1].write_bytes(shards[1].read_bytes()[:-10])
    with pytest.raises(WeightLoadError, match=r"00002-of-00002\.safetensors has \d+ bytes, recorded \d+"):
        verify_files(shards, index.parent / MANIFEST_NAME, full=False)


def test_load_records_then_enforces_the_manifest(ref, tmp_path):
    index = write_sharded(ref, tmp_path / "w", 2)
    report = load(index, manifest=True)
    manifest = index.parent / MANIFEST_NAME
    assert manifest.is_file() and report.manifest == str(manifest)
    load(index, manifest=True)  # verified this time
    shard = sorted(index.parent.glob("*.safetensors"))[0]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(WeightLoadError, match="changed or corrupted"):
        load(index, manifest=True)


def test_manifest_does_not_list_a_new_file(ref, tmp_path):
    a = save(ref, tmp_path / "a.safetensors")
    write_manifest([a], tmp_path / MANIFEST_NAME)
    b = save(ref, tmp_path / "b.safetensors")
    with pytest.raises(WeightLoadError, match=r"b\.safetensors is not in"):
        verify_files([a, b], tmp_path / MANIFEST_NAME)
