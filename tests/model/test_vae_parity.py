"""Wan VAE port vs the reference's golden vectors (golden README section 3), plus API guarantees."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from model.vae import (
    CausalCache,
    VAEConfig,
    WanVAE,
    frames_to_video,
    video_to_frames,
)
from model.vae.loading import strip_vae_prefix

from ..helpers.model_family import golden_vae_config, random_vae, smooth_clip, vae_bf16_decode_error

ATOL = 1e-5  # golden README: VAE latents and frames
# bf16 decode vs float32, mean absolute pixel error: worst 0.018 over a sweep of random VAEs of the
# golden family (tests/bounds/model_bounds_sweep.py); kept (2.8x the worst).
BF16_DECODE_MEAN_ABS_MAX = 0.05


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one thread avoids OpenMP hand-off costs on a shared 2-core box (speed only)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def golden(golden_dir):
    cfg = VAEConfig.from_reference_kwargs(json.loads((golden_dir / "vae_config.json").read_text()))
    weights = load_file(str(golden_dir / "vae_weights.safetensors"))
    case = load_file(str(golden_dir / "vae_case.safetensors"))
    return cfg, weights, case


@pytest.fixture(scope="module")
def vae(golden):
    cfg, weights, _ = golden
    return WanVAE.from_state_dict(cfg, weights)


def test_state_dict_keys_equal_checkpoint_names(golden, vae):
    _, weights, _ = golden
    assert set(vae.state_dict()) == set(weights)
    assert all(vae.state_dict()[k].shape == v.shape for k, v in weights.items())


@pytest.mark.parametrize(
    "name, source, normalize",
    [
        ("enc_video", "video", True),
        ("enc_cond_clip", "cond_clip", True),
        ("enc_image", "image", True),
        ("enc_video_unnormalized_mu", "video", False),
    ],
)
def test_encode_matches_reference(golden, vae, name, source, normalize):
    _, _, case = golden
    out = vae.encode(case[source][None], normalize=normalize)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out[0], case[name], atol=ATOL, rtol=0)


@pytest.fixture(scope="module")
def decoded(golden, vae):
    _, _, case = golden
    return {"dec": vae.decode(case["z"][None]), "dec_unclamped": vae.decode(case["z"][None], clamp=False)}


@pytest.mark.parametrize("name", ["dec", "dec_unclamped"])
def test_decode_matches_reference(golden, decoded, name):
    _, _, case = golden
    assert decoded[name].dtype == torch.float32
    torch.testing.assert_close(decoded[name][0], case[name], atol=ATOL, rtol=0)


def test_unclamped_decode_exceeds_unit_range_and_clamped_does_not(decoded):
    raw, clamped = decoded["dec_unclamped"], decoded["dec"]
    assert raw.abs().max() > 1 and clamped.abs().max() <= 1
    assert torch.equal(clamped, raw.clamp(-1, 1))


@pytest.mark.parametrize("clamp", [True, False])
def test_decode_stream_yields_frames_per_latent_and_equals_decode(golden, vae, decoded, clamp):
    cfg, _, case = golden
    z = case["z"][None]
    chunks = list(vae.decode_stream(z, clamp=clamp))
    assert [c.shape[2] for c in chunks] == [1] + [cfg.temporal_stride] * (z.shape[2] - 1)
    assert torch.equal(torch.cat(chunks, dim=2), decoded["dec" if clamp else "dec_unclamped"])


def test_batched_calls_equal_per_sample_calls(golden, vae):
    _, _, case = golden
    both = torch.stack([case["video"], case["cond_clip"]])
    lat = vae.encode(both)
    torch.testing.assert_close(lat[1], vae.encode(case["cond_clip"][None])[0], atol=ATOL, rtol=0)
    # Decoding amplifies the batch-size-dependent rounding of the conv kernels a little.
    dec = vae.decode(torch.stack([lat[0], case["z"]]))
    torch.testing.assert_close(dec[1], case["dec"], atol=1e-4, rtol=1e-4)


def test_sizes_follow_causal_chunking(golden, vae):
    cfg, _, case = golden
    v = case["video"][None]
    s = cfg.spatial_stride
    for t in (1, 5):
        lat = vae.encode(v[:, :, :t])
        assert lat.shape == (1, cfg.z_dim, cfg.latent_frames(t), v.shape[-2] // s, v.shape[-1] // s)
        assert vae.decode(lat).shape[2] == cfg.pixel_frames(lat.shape[2]) == t


def test_encoder_cache_keeps_two_frames_per_layer_and_does_not_grow(golden, vae):
    _, _, case = golden
    v = case["video"][None]
    cache = CausalCache()
    vae.encoder(v[:, :, :1], cache)
    vae.encoder(v[:, :, 1:5], cache)
    frames = [t.shape[2] for t in cache._state.values() if isinstance(t, torch.Tensor)]
    assert frames and max(frames) <= 2
    size = cache.nbytes()
    vae.encoder(v[:, :, 5:9], cache)
    assert cache.nbytes() == size


def test_bf16_and_inference_mode_decode_close_to_fp32(golden):
    cfg, weights, case = golden
    vae16 = WanVAE.from_state_dict(cfg, weights, dtype=torch.bfloat16)
    with torch.inference_mode():
        out = vae16.decode(case["z"][None])
    assert out.dtype == torch.float32 and out.shape[1:] == case["dec"].shape
    assert (out[0] - case["dec"]).abs().mean() < BF16_DECODE_MEAN_ABS_MAX


@pytest.mark.parametrize(("sizes", "seed"), [({}, 14), (dict(dim=8, num_res_blocks=1), 14)])
def test_bf16_decode_stays_close_for_other_vaes_of_the_family(golden_dir, sizes, seed):
    vae = random_vae(golden_vae_config(golden_dir, **sizes), seed)
    z = vae.encode(smooth_clip(seed))
    assert 0 < vae_bf16_decode_error(vae, z) < BF16_DECODE_MEAN_ABS_MAX


def test_real_size_builds_on_meta_with_checkpoint_names(golden):
    with torch.device("meta"):
        real = WanVAE(VAEConfig.wan21())
    tiny = WanVAE(VAEConfig.tiny())
    sd = real.state_dict()
    assert set(sd) == set(tiny.state_dict())
    assert all(t.is_meta for t in sd.values())
    assert sd["encoder.conv1.weight"].shape == (96, 3, 3, 3, 3)
    assert sd["decoder.head.2.weight"].shape == (3, 96, 3, 3, 3)
    assert sd["conv1.weight"].shape == (32, 32, 1, 1, 1)


def test_wrong_weights_fail_with_named_keys(golden):
    cfg, weights, _ = golden
    broken = {k: v for k, v in weights.items() if k != "decoder.head.0.gamma"}
    with pytest.raises(ValueError, match="decoder.head.0.gamma"):
        WanVAE.from_state_dict(cfg, broken)
    prefixed = {f"model.{k}": v for k, v in weights.items()}
    assert set(strip_vae_prefix(prefixed)) == set(weights)


def test_uint8_frames_round_trip_through_unit_range():
    levels = torch.arange(256, dtype=torch.uint8).reshape(1, 16, 16, 1).expand(2, 16, 16, 3).contiguous()
    video = frames_to_video(levels)
    assert video.shape == (3, 2, 16, 16) and video.dtype == torch.float32
    torch.testing.assert_close(video[0, 0].flatten(), (torch.arange(256) / 255 - 0.5) * 2, atol=0, rtol=0)
    assert torch.equal(video_to_frames(video), levels)
    floor = video_to_frames(video - 1e-3, truncate=True)
    assert torch.equal(floor.int(), (levels.int() - 1).clamp(min=0))
    assert torch.equal(video_to_frames(torch.full((3, 1, 2, 2), 5.0)), torch.full((1, 2, 2, 3), 255, dtype=torch.uint8))


def test_load_wan_vae_from_pth_with_wrapper_prefix(golden, tmp_path):
    from model.vae import load_wan_vae

    cfg, weights, case = golden
    path = tmp_path / "vae.pth"
    torch.save({f"model.{k}": v for k, v in weights.items()}, path)
    vae = load_wan_vae(path, cfg)
    torch.testing.assert_close(vae.encode(case["image"][None])[0], case["enc_image"], atol=ATOL, rtol=0)
