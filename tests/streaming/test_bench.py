"""`infinitetalk-live bench` runs end to end on the tiny model and reports what the issue asks for."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from model.infinitetalk.tiny import TINY_CLIP, TINY_WAV2VEC2, tiny_dit_config
from model.vae import VAEConfig
from server.cli import main
from streaming.benchmark.models import RandomShape, bench_avatar, random_bundle
from streaming.generator import WindowJob

from ..helpers.tiny_infinitetalk import FAST_FEATURES, FAST_WINDOW


def test_bench_prints_stages_latency_sessions_guidance_and_memory_as_json(capsys):
    code = main(["bench", "--seconds", "0.6", "--windows", "1", "--sessions", "1,2", "--repeats", "1", "--threads", "1",
                 "--only", "stages,quality,offline,sessions,guidance"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    s = report["settings"]
    assert (s["shape"], s["preset"], s["size"], s["dit_calls_per_step"]) == ("tiny", "tiny-random", [32, 32], 2)
    stages = report["stages"]
    for name in ("features", "dit_step", "vae_encode_motion", "vae_decode", "colour_match"):
        assert stages["stages_s_per_window"][name] > 0, name
    assert stages["realtime_factor"] > 0 and stages["dit_s_per_step"] > 0
    assert stages["video_encode_ms_per_frame"]["jpeg"] > 0 and stages["video_encode_ms_per_frame"]["h264"] > 0
    off = report["engine_offline"]
    assert off["frames"] % s["new_frames"] == 0 and off["realtime_factor"] > 0 and off["first_frame_latency_s"] > 0
    q = report["quality_levels"]
    assert q["full"]["steps"] == 2 and q["min_steps"]["steps"] == 1 and q["full"]["speedup_vs_full"] == 1.0
    two = report["sessions"]["2"]
    assert two["one_at_a_time"]["batched_passes"] == 0 and len(two["batched"]["first_frame_latency_s"]) == 2
    assert two["batched"]["video_s_total"] == two["one_at_a_time"]["video_s_total"]
    g = report["guidance"]
    assert g["branches"] == 2 and g["batched_branches_speedup"] > 0
    ratios = report["speedups_vs_plain"]
    assert {"session_batching_2_sessions", "batched_guidance_branches", "adaptive_min_steps_vs_full"} <= set(ratios)
    assert report["peak_memory"]["kind"] == "cpu_peak_rss" and report["peak_memory"]["mb"] > 0


def test_bench_refuses_unknown_sections_and_missing_cuda(capsys):
    assert main(["bench", "--only", "stages,nope"]) == 2
    assert "unknown bench sections" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["bench", "--shape", "14b", "--device", "cuda"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err


def test_random_bundle_builds_every_network_on_the_device_without_files():
    """The path `--shape 14b` takes (meta build, to_empty, seeded fill), at the tiny sizes."""
    from streaming.backends.infinitetalk.generator import InfiniteTalkBackendSettings, InfiniteTalkGenerator

    shape = RandomShape(tiny_dit_config(), VAEConfig.tiny(), TINY_CLIP, TINY_WAV2VEC2, text_tokens=(4, 6))
    bundle = random_bundle(shape, "cpu", torch.float32, seed=3)
    assert all(torch.isfinite(p).all() for p in bundle.pipe.dit.parameters())
    assert all(p.device.type == "cpu" for p in bundle.pipe.vae.parameters())
    gen = InfiniteTalkGenerator(bundle, InfiniteTalkBackendSettings(window=FAST_WINDOW, size=(32, 32),
                                                                    features=FAST_FEATURES))
    state = gen.open_session("s", bench_avatar((32, 32)))
    audio = (np.random.default_rng(0).standard_normal((1, gen.window.job_samples)) * 0.1).astype(np.float32)
    frames = list(gen.generate(state, WindowJob("s", 0, 0, audio, True)))
    assert len(frames) == gen.window.new_frames and frames[0].shape == (32, 32, 3)
    assert np.std(np.stack(frames).astype(float)) > 1  # random weights still make varied pixels


@pytest.mark.parametrize("args,err", [(["--shape", "tiny", "--preset", "infinitetalk"], "needs --preset tiny-random")])
def test_bench_option_errors_say_what_to_do(capsys, args, err):
    assert main(["bench", *args]) == 2
    assert err in capsys.readouterr().err
