"""wav2vec2 from one ComfyUI-style weights file with no config: the architecture read from the tensors must be
the one transformers' Wav2Vec2Model was built with, and the loaded model must compute the same features."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from transformers import Wav2Vec2Config, Wav2Vec2Model

from model.audio import Wav2Vec2LoadError, load_wav2vec2
from model.audio.single_file import infer_wav2vec2_config

BASE_LIKE = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=96,
                 conv_dim=(16, 16, 16, 16, 16, 16, 24), conv_bias=False, feat_extract_norm="group",
                 do_stable_layer_norm=False, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
LARGE_LIKE = dict(BASE_LIKE, num_hidden_layers=3, conv_bias=True, feat_extract_norm="layer", do_stable_layer_norm=True,
                  num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=8)
CHECKED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "conv_dim", "conv_kernel",
           "conv_stride", "conv_bias", "feat_extract_norm", "do_stable_layer_norm", "num_conv_pos_embeddings",
           "num_conv_pos_embedding_groups")


def _comfy_file(tmp_path, sizes: dict, old_weight_norm: bool, dtype=torch.float32) -> tuple[Wav2Vec2Model, object]:
    torch.manual_seed(0)
    model = Wav2Vec2Model(Wav2Vec2Config(**sizes)).eval()
    sd = {}
    for k, v in model.state_dict().items():
        if old_weight_norm:
            k = k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v")
        sd["wav2vec2." + k] = v.to(dtype).contiguous()
    path = tmp_path / "wav2vec2-chinese-base_fp16.safetensors"
    save_file(sd, path)
    return model, path


@pytest.mark.parametrize("sizes, old_weight_norm", [(BASE_LIKE, True), (LARGE_LIKE, False)])
def test_the_inferred_architecture_is_transformers_own_and_computes_the_same(tmp_path, sizes, old_weight_norm):
    original, path = _comfy_file(tmp_path, sizes, old_weight_norm)
    loaded = load_wav2vec2(path)
    for name in CHECKED:
        assert getattr(loaded.config, name) == getattr(original.config, name), name
    wave = torch.randn(1, 16000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = original(wave, output_hidden_states=True).hidden_states
        got = loaded(wave, output_hidden_states=True).hidden_states
    assert len(got) == len(want) == sizes["num_hidden_layers"] + 1
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)


def test_an_fp16_file_loads_to_float32(tmp_path):
    _, path = _comfy_file(tmp_path, BASE_LIKE, True, dtype=torch.float16)
    loaded = load_wav2vec2(path)
    assert next(loaded.parameters()).dtype == torch.float32 and loaded.config.num_hidden_layers == 2


def test_a_file_that_is_not_wav2vec2_is_a_clear_error(tmp_path):
    path = tmp_path / "clip_vision_h.safetensors"
    save_file({"visual.proj": torch.zeros(2, 2)}, path)
    with pytest.raises(Wav2Vec2LoadError, match="not a wav2vec2 state dict"):
        load_wav2vec2(path)
    sd = {k: v for k, v in Wav2Vec2Model(Wav2Vec2Config(**BASE_LIKE)).state_dict().items()}
    sd["feature_extractor.conv_layers.0.conv.weight"] = torch.zeros(16, 1, 7)
    with pytest.raises(ValueError, match="CNN kernels"):
        infer_wav2vec2_config(sd)
