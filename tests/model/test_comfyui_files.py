"""Weights as ComfyUI users have them, named by a weights config JSON, load into the same model.

ComfyUI keeps the DiT as one file under `model.diffusion_model.`, the InfiniteTalk adapter as a model
patch, the CLIP tower in the transformers layout (`clip_vision_h.safetensors`) and no DiT config.json.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from model.dit import DiTConfig, InfiniteTalkDiT
from model.infinitetalk.bundle import CLIP_CONFIG, VAE_CONFIG, ModelFiles, load_bundle, load_dit
from model.infinitetalk.tiny import write_tiny_weights
from model.weights import WeightLoadError


def _to_transformers_clip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The reference CLIP names written the way transformers (and ComfyUI's clip_vision files) name them."""
    out = {}
    parts = {"norm1": "layer_norm1", "norm2": "layer_norm2", "attn.proj": "self_attn.out_proj",
             "mlp.0": "mlp.fc1", "mlp.2": "mlp.fc2"}
    for key, v in state.items():
        if key == "visual.cls_embedding":
            out["vision_model.embeddings.class_embedding"] = v.reshape(-1)
        elif key == "visual.pos_embedding":
            out["vision_model.embeddings.position_embedding.weight"] = v[0]
        elif key.startswith("visual.patch_embedding."):
            out[key.replace("visual.", "vision_model.embeddings.")] = v
        elif key.startswith("visual.pre_norm."):
            out[key.replace("visual.pre_norm.", "vision_model.pre_layrnorm.")] = v
        else:
            index, module, param = key.removeprefix("visual.transformer.").split(".", 1)[0], *key.rsplit(".", 1)
            module = module.removeprefix(f"visual.transformer.{index}.")
            layer = f"vision_model.encoder.layers.{index}."
            if module == "attn.to_qkv":
                for name, piece in zip("qkv", v.chunk(3), strict=True):
                    out[f"{layer}self_attn.{name}_proj.{param}"] = piece.contiguous()
            else:
                out[f"{layer}{parts[module]}.{param}"] = v
    out["visual_projection.weight"] = torch.zeros(4, state["visual.pos_embedding"].shape[-1])
    return out


def _merged(paths) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for p in paths:
        state.update(load_file(str(p)))
    return state


def test_comfyui_files_load_the_same_model_as_the_release(tmp_path):
    release = ModelFiles.discover(write_tiny_weights(tmp_path / "release"))
    comfy = tmp_path / "ComfyUI" / "models"
    for sub in ("diffusion_models", "model_patches", "vae", "clip_vision"):
        (comfy / sub).mkdir(parents=True)
    shards = sorted(release.dit[0].parent.glob("diffusion_pytorch_model-*.safetensors"))
    save_file({f"model.diffusion_model.{k}": v for k, v in _merged(shards).items()},
              str(comfy / "diffusion_models" / "wan2.1_i2v_tiny.safetensors"))
    shutil.copy(release.adapter, comfy / "model_patches" / "wan2.1_infiniteTalk_single.safetensors")
    shutil.copy(release.vae, comfy / "vae" / "wan_2.1_vae.safetensors")
    shutil.copy(release.vae.parent / VAE_CONFIG, comfy / "vae" / VAE_CONFIG)  # tiny sizes only
    save_file(_to_transformers_clip(load_file(str(release.clip))), str(comfy / "clip_vision" / "clip_vision_h.safetensors"))
    shutil.copy(release.clip.parent / CLIP_CONFIG, comfy / "clip_vision" / CLIP_CONFIG)
    config = {
        "dit": "models/diffusion_models/wan2.1_i2v_tiny.safetensors",
        "dit_config": str(release.dit_config),  # tiny heads are not Wan's 128 wide: named explicitly
        "adapter": "models/model_patches/wan2.1_infiniteTalk_single.safetensors",
        "vae": "models/vae/wan_2.1_vae.safetensors",
        "clip": "models/clip_vision/clip_vision_h.safetensors",
        "wav2vec2": str(release.wav2vec2),
        "prompt_embeddings": str(release.prompt_embeddings),
    }
    (comfy.parent / "infinitetalk.json").write_text(json.dumps(config))
    files = ModelFiles.from_json(comfy.parent / "infinitetalk.json")

    a, b = load_bundle(release, dtype=torch.float32), load_bundle(files, dtype=torch.float32)
    for part in ("dit", "vae", "clip"):
        sa, sb = getattr(a.pipe, part).state_dict(), getattr(b.pipe, part).state_dict()
        assert sa.keys() == sb.keys(), part
        for k in sa:
            assert torch.equal(sa[k], sb[k]), f"{part}: {k}"


def _wan_shaped_dit_file(tmp_path, text_len: int = 512):
    """A small DiT whose heads are 128 wide like every Wan release, as one ComfyUI-style file."""
    cfg = dataclasses.replace(DiTConfig.tiny(), dim=256, num_heads=2, text_len=text_len)
    dit = InfiniteTalkDiT(cfg)
    path = tmp_path / "dit.safetensors"
    save_file({f"model.diffusion_model.{k}": v.contiguous() for k, v in dit.state_dict().items()}, str(path))
    return cfg, path


def test_dit_sizes_are_read_from_the_weights_when_no_config_is_named(tmp_path):
    cfg, path = _wan_shaped_dit_file(tmp_path)
    release = ModelFiles.discover(write_tiny_weights(tmp_path / "release"))
    config = {"dit": str(path), "vae": str(release.vae), "clip": str(release.clip), "wav2vec2": str(release.wav2vec2)}
    (tmp_path / "w.json").write_text(json.dumps(config))
    files = ModelFiles.from_json(tmp_path / "w.json")
    assert files.dit_config is None and files.dit_config not in files.all_paths()
    dit = load_dit(files, device=torch.device("cpu"), dtype=torch.float32)
    assert dit.cfg == cfg


def test_uninferable_dit_sizes_ask_for_the_config(tmp_path):
    release = ModelFiles.discover(write_tiny_weights(tmp_path / "release"))  # 16-wide heads: not inferable
    files = dataclasses.replace(release, dit_config=None)
    with pytest.raises(WeightLoadError, match="dit_config"):
        load_dit(files, device=torch.device("cpu"), dtype=torch.float32)
