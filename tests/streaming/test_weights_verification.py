"""Weight files changed or truncated on disk are refused at start, naming the file (issue 5).

The tiny random InfiniteTalk is written to a temporary folder in the release layout; the first good
load records weights.sha256.json, later starts verify against it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from model.families import ModelOptions
from model.infinitetalk import ModelFiles
from model.infinitetalk.manifest import verify_weights, weight_files
from model.infinitetalk.tiny import write_tiny_weights
from model.weights import MANIFEST_NAME, WeightLoadError
from streaming.backends import create_generator
from streaming.backends.infinitetalk import InfiniteTalkOptions


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """Tiny weights after one good load (so with their manifest)."""
    torch.set_num_threads(1)
    root = write_tiny_weights(tmp_path_factory.mktemp("tiny-weights"))
    assert not (root / MANIFEST_NAME).exists()
    build(root)
    return root


@pytest.fixture
def weights(recorded, tmp_path) -> Path:
    """A private copy of the recorded weights, free to damage."""
    return Path(shutil.copytree(recorded, tmp_path / "w"))


def build(root: Path, mode: str = "full"):
    return create_generator("infinitetalk", InfiniteTalkOptions(ModelOptions(weights=root, device="cpu", size=(32, 32),
                                                                             verify_weights=mode)))


def a_dit_shard(root: Path) -> Path:
    return next(p for p in weight_files(ModelFiles.discover(root)) if p.name.startswith("diffusion_pytorch_model-"))


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # in the tensor data: same size, still a valid file
    path.write_bytes(bytes(data))


def test_the_first_good_load_records_every_file_it_read(weights):
    recorded = json.loads((weights / MANIFEST_NAME).read_text())["files"]
    names = set(recorded)
    assert any(n.endswith("diffusion_pytorch_model.safetensors.index.json") for n in names)
    assert sum("diffusion_pytorch_model-" in n for n in names) == 2  # both shards, found through the index
    for part in ("Wan2.1_VAE", "models_clip", "infinitetalk.safetensors", "prompt_embeddings", "config.json",
                 "chinese-wav2vec2-base/"):
        assert any(part in n for n in names), (part, sorted(names))
    shard = a_dit_shard(weights)
    entry = next(v for k, v in recorded.items() if k.endswith(shard.name))
    assert entry["size"] == shard.stat().st_size and len(entry["sha256"]) == 64
    build(weights)  # unchanged files load again


def test_a_truncated_file_is_refused_at_start_naming_it(weights):
    root = weights
    shard = a_dit_shard(root)
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    for mode in ("full", "size"):
        with pytest.raises(WeightLoadError) as err:
            build(root, mode)
        message = str(err.value)
        assert str(shard) in message and "truncated" in message and MANIFEST_NAME in message
        assert err.value.files == (str(shard),)


def test_a_changed_file_of_the_same_size_is_refused_by_the_full_check_only(weights):
    root = weights
    vae = next(p for p in weight_files(ModelFiles.discover(root)) if p.name.startswith("Wan2.1_VAE"))
    flip_last_byte(vae)
    with pytest.raises(WeightLoadError) as err:
        build(root, "full")
    assert str(vae) in str(err.value) and "sha256" in str(err.value)
    files = ModelFiles.discover(root)
    assert verify_weights(files, root / MANIFEST_NAME, "size") == []  # sizes alone cannot see it (documented)
    assert len(verify_weights(files, root / MANIFEST_NAME, "off")) == len(weight_files(files))  # nothing checked


def test_files_that_join_later_are_recorded_after_their_first_load(weights):
    from model.infinitetalk.manifest import record_weights

    manifest = weights / MANIFEST_NAME
    extra = weights / "extra_lora.safetensors"
    extra.write_bytes(b"not checked until recorded")
    record_weights(manifest, [extra])
    entries = json.loads(manifest.read_text())["files"]
    assert "extra_lora.safetensors" in entries and len(entries) == len(weight_files(ModelFiles.discover(weights))) + 1
    extra.write_bytes(b"changed")
    from model.weights.checksums import verify_files

    with pytest.raises(WeightLoadError, match="extra_lora"):
        verify_files([extra], manifest)


def test_the_cli_refuses_to_serve_changed_weights_with_a_clear_message(weights, capsys):
    from server.cli import main

    root = weights
    shard = a_dit_shard(root)
    flip_last_byte(shard)
    code = main(["serve", "--backend", "infinitetalk", "--weights", str(root), "--device", "cpu", "--port", "0",
                 "--log-level", "error"])
    err = capsys.readouterr().err
    assert code == 2
    assert "cannot start backend infinitetalk" in err and str(shard) in err and "different sha256" in err
