"""ComfyUI's `clip_vision_h.safetensors` (transformers CLIP layout) loads into the reference CLIP tower.

The check is against `transformers`' own `CLIPVisionModelWithProjection`: with random weights in its
layout, our tower must give the model's penultimate hidden states (what Wan / InfiniteTalk, and
ComfyUI's Wan nodes, feed the DiT).
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from transformers import CLIPVisionConfig as HFCLIPVisionConfig
from transformers import CLIPVisionModelWithProjection

from model.clip_vision import CLIPVisionConfig, load_clip_vision
from model.weights.clip_layouts import is_transformers_clip, transformers_clip_to_reference


def _hf_model(dim: int, heads: int, layers: int, image: int, patch: int, mlp: int, seed: int):
    cfg = HFCLIPVisionConfig(
        hidden_size=dim, intermediate_size=mlp, num_attention_heads=heads, num_hidden_layers=layers,
        image_size=image, patch_size=patch, hidden_act="gelu", layer_norm_eps=1e-5, projection_dim=8,
    )
    model = CLIPVisionModelWithProjection(cfg).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # every tensor random (the default init leaves norms at 1/0 and hides mix-ups)
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return model


def _penultimate(model, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]


def _save(model, path, dtype=torch.float32) -> None:
    save_file({k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}, str(path))


def test_transformers_clip_file_matches_transformers_model(tmp_path):
    torch.manual_seed(0)
    hf = _hf_model(dim=48, heads=4, layers=3, image=28, patch=14, mlp=96, seed=1)
    path = tmp_path / "clip_vision_h.safetensors"
    _save(hf, path)
    cfg = CLIPVisionConfig(image_size=28, patch_size=14, dim=48, mlp_ratio=2.0, num_heads=4, num_layers=3)
    ours = load_clip_vision(path, cfg)
    assert len(ours.visual.transformer) == 2  # the last block is never run, so never loaded
    pixels = torch.randn(2, 3, 28, 28)
    torch.testing.assert_close(ours(pixels), _penultimate(hf, pixels), atol=2e-5, rtol=1e-5)


def test_fp16_comfyui_copy_loads_and_stays_close(tmp_path):
    hf = _hf_model(dim=32, heads=2, layers=2, image=16, patch=4, mlp=64, seed=2)
    path = tmp_path / "clip_vision_h.safetensors"
    _save(hf, path, torch.float16)  # ComfyUI ships fp16
    ours = load_clip_vision(path, CLIPVisionConfig(image_size=16, patch_size=4, dim=32, mlp_ratio=2.0,
                                                   num_heads=2, num_layers=2))
    assert ours.visual.pos_embedding.dtype == torch.float32
    pixels = torch.randn(1, 3, 16, 16)
    hf16 = _hf_model(dim=32, heads=2, layers=2, image=16, patch=4, mlp=64, seed=2).half().float()
    torch.testing.assert_close(ours(pixels), _penultimate(hf16, pixels), atol=5e-5, rtol=1e-5)


def test_mapping_names_and_shapes():
    hf = _hf_model(dim=32, heads=2, layers=2, image=16, patch=4, mlp=64, seed=3)
    state = hf.state_dict()
    assert is_transformers_clip(state)
    mapped = transformers_clip_to_reference(state)
    assert not is_transformers_clip(mapped)
    qkv = mapped["visual.transformer.1.attn.to_qkv.weight"]
    assert qkv.shape == (96, 32)
    torch.testing.assert_close(qkv[32:64], state["vision_model.encoder.layers.1.self_attn.k_proj.weight"])
    assert mapped["visual.cls_embedding"].shape == (1, 1, 32)
    assert mapped["visual.pos_embedding"].shape == (1, 17, 32)
    assert not any(k.startswith(("visual_projection", "vision_model.post_layernorm")) for k in mapped)


def test_incomplete_transformers_file_names_what_is_missing(tmp_path):
    hf = _hf_model(dim=32, heads=2, layers=2, image=16, patch=4, mlp=64, seed=4)
    state = {k: v for k, v in hf.state_dict().items() if "layers.0.self_attn.v_proj" not in k}
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "broken.safetensors"))
    cfg = CLIPVisionConfig(image_size=16, patch_size=4, dim=32, mlp_ratio=2.0, num_heads=2, num_layers=2)
    with pytest.raises(ValueError, match=r"broken\.safetensors.*missing 2.*to_qkv.*unexpected 4.*k_proj"):
        load_clip_vision(tmp_path / "broken.safetensors", cfg)


def test_weights_folder_with_comfyui_clip_file_loads(tmp_path):
    """The release layout with ComfyUI's CLIP file in place of the reference one: found and loaded."""
    from model.infinitetalk.bundle import CLIP_NAMES, ModelFiles, load_bundle
    from model.infinitetalk.tiny import TINY_CLIP, write_tiny_weights

    root = write_tiny_weights(tmp_path / "weights")
    reference = ModelFiles.discover(root).clip
    reference.unlink()
    hf = _hf_model(dim=TINY_CLIP.dim, heads=TINY_CLIP.num_heads, layers=TINY_CLIP.num_layers,
                   image=TINY_CLIP.image_size, patch=TINY_CLIP.patch_size, mlp=TINY_CLIP.mlp_dim, seed=5)
    _save(hf, reference.parent / "clip_vision_h.safetensors")
    files = ModelFiles.discover(root)
    assert files.clip.name == "clip_vision_h.safetensors" and files.clip.name in CLIP_NAMES
    bundle = load_bundle(files, dtype=torch.float32)
    image = torch.rand(1, 3, 1, 40, 40) * 2 - 1
    clip = bundle.pipe.clip
    torch.testing.assert_close(clip.encode_image(image), _penultimate(hf, clip.preprocess(image)),
                               atol=2e-5, rtol=1e-5)
