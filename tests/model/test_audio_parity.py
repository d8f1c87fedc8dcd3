"""wav2vec2 feature path vs the reference goldens (audio_case*.safetensors), stage by stage and whole."""

from __future__ import annotations

import json
import shutil
import wave

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from model.audio import (
    Wav2Vec2LoadError,
    audio_windows,
    conv_features,
    encode_features,
    interpolate_features,
    load_wav2vec2,
    loudness_normalize,
    normalize_input,
    num_video_frames,
    whole_clip_embedding,
    window_indices,
)

TOL = dict(atol=1e-4, rtol=1e-4)
CASES = ["case0", "case1"]


@pytest.fixture(scope="module")
def w2v_dir(golden_dir):
    return golden_dir / "wav2vec2_tiny"


@pytest.fixture(scope="module")
def w2v(w2v_dir):
    return load_wav2vec2(w2v_dir, attn_implementation="eager")  # what the reference ran


@pytest.fixture(scope="module")
def summary(golden_dir):
    return json.loads((golden_dir / "summary.json").read_text())["audio"]


def _case(golden_dir, case):
    return load_file(str(golden_dir / f"audio_{case}.safetensors"))


@pytest.mark.parametrize("case", CASES)
def test_preprocessing_matches(golden_dir, case):
    g = _case(golden_dir, case)
    normed = loudness_normalize(g["waveform"].numpy())
    assert normed.dtype == np.float32
    torch.testing.assert_close(torch.from_numpy(normed), g["loudness_normed"], **TOL)
    torch.testing.assert_close(normalize_input(g["loudness_normed"]), g["input_values"], **TOL)


@pytest.mark.parametrize("case", CASES)
def test_each_model_stage_matches(golden_dir, w2v, case):
    g = _case(golden_dir, case)
    torch.testing.assert_close(conv_features(w2v, g["input_values"]), g["conv_features"], **TOL)
    frames = num_video_frames(g["waveform"].shape[0])
    torch.testing.assert_close(interpolate_features(g["conv_features"], frames), g["interp_features"], **TOL)
    layers = encode_features(w2v, g["interp_features"])
    assert layers.shape == (frames, w2v.config.num_hidden_layers, w2v.config.hidden_size)
    torch.testing.assert_close(layers[:, -1], g["last_hidden_state"], **TOL)
    torch.testing.assert_close(layers, g["audio_emb"], **TOL)


@pytest.mark.parametrize("case", CASES)
def test_whole_clip_embedding_matches(golden_dir, w2v, case):
    g = _case(golden_dir, case)
    torch.testing.assert_close(whole_clip_embedding(w2v, g["waveform"].numpy()), g["audio_emb"], **TOL)


def test_sdpa_attention_matches_too(golden_dir, w2v_dir):
    g = _case(golden_dir, "case0")
    model = load_wav2vec2(w2v_dir, attn_implementation="sdpa")
    torch.testing.assert_close(whole_clip_embedding(model, g["waveform"].numpy()), g["audio_emb"], **TOL)


@pytest.mark.parametrize("case", CASES)
def test_windows_match(golden_dir, summary, case):
    g = _case(golden_dir, case)
    info = summary[case]
    emb, frames = g["audio_emb"], info["window_frames"]
    for name, start in zip(("window_start", "window_end"), info["window_start"], strict=True):
        idx = window_indices(frames, start, emb.shape[0])
        assert torch.equal(idx, g[f"{name}_index"])
        torch.testing.assert_close(audio_windows(emb, start, frames)[None], g[name], atol=0, rtol=0)


def test_window_rows_are_clamped_neighbours():
    idx = window_indices(4, 0, 3)
    assert idx.tolist() == [[0, 0, 0, 1, 2], [0, 0, 1, 2, 2], [0, 1, 2, 2, 2], [1, 2, 2, 2, 2]]


def test_frame_count_follows_the_reference_float_formula():
    assert num_video_frames(32000) == 50
    assert num_video_frames(19680) == 30
    assert num_video_frames(29 * 640) == 28  # the reference's float rounding, kept for parity


def _read_wav(path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


def test_real_speech_gives_one_finite_row_per_video_frame(speech_dir, w2v_dir):
    model = load_wav2vec2(w2v_dir)
    x = _read_wav(speech_dir / "speech_en1.wav")
    emb = whole_clip_embedding(model, x)
    assert emb.shape == (int(x.shape[0] / 16000 * 25), model.config.num_hidden_layers, model.config.hidden_size)
    assert torch.isfinite(emb).all()
    assert float(emb.std(dim=0).mean()) > 0  # frames differ: the features follow the speech


def test_silence_is_left_unnormalised():
    x = np.zeros(16000, dtype=np.float32)
    assert np.array_equal(loudness_normalize(x), x)


# ---- loader errors ---------------------------------------------------------------------------------


def test_missing_folder_is_reported(tmp_path):
    with pytest.raises(Wav2Vec2LoadError, match="does not exist"):
        load_wav2vec2(tmp_path / "nope")


@pytest.mark.parametrize("drop", ["config.json", "preprocessor_config.json", "model.safetensors"])
def test_missing_file_is_named(tmp_path, w2v_dir, drop):
    d = tmp_path / "w2v"
    shutil.copytree(w2v_dir, d)
    (d / drop).chmod(0o644)
    (d / drop).unlink()
    with pytest.raises(Wav2Vec2LoadError, match=drop.split(".")[0]):
        load_wav2vec2(d)


def test_incomplete_weights_are_named(tmp_path, w2v_dir):
    d = tmp_path / "w2v"
    shutil.copytree(w2v_dir, d)
    sd = load_file(str(d / "model.safetensors"))
    dropped = "encoder.layers.0.attention.q_proj.weight"
    del sd[dropped]
    (d / "model.safetensors").chmod(0o644)
    save_file(sd, str(d / "model.safetensors"))
    with pytest.raises(Wav2Vec2LoadError, match="q_proj"):
        load_wav2vec2(d)


def test_old_weight_norm_names_in_pytorch_bin_load_the_same_model(tmp_path, w2v_dir, golden_dir):
    """chinese-wav2vec2-base ships pytorch_model.bin with weight_g / weight_v pos-conv names."""
    d = tmp_path / "w2v_bin"
    d.mkdir()
    for f in ("config.json", "preprocessor_config.json"):
        shutil.copy(w2v_dir / f, d / f)
    renames = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
    sd = {}
    for k, v in load_file(str(w2v_dir / "model.safetensors")).items():
        for new, old in renames.items():
            k = k.replace(new, old)
        sd[k] = v
    assert any(k.endswith("weight_g") for k in sd)
    torch.save(sd, d / "pytorch_model.bin")
    g = _case(golden_dir, "case1")
    got = whole_clip_embedding(load_wav2vec2(d), g["waveform"].numpy())
    torch.testing.assert_close(got, g["audio_emb"], **TOL)
