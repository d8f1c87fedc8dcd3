"""`infinitetalk-live bench --preset flashhead-pro|flashhead-lite` and the GPU suite's FlashHead steps, run for real on the
tiny random release (fields and their consistency are asserted, never timings)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model.flashhead.tiny import TINY_CONFIG, TINY_WAV2VEC2_64
from model.timebase import VIDEO_FPS
from model.vae import VAEConfig
from server.cli import main
from streaming.benchmark import flashhead

REPO = Path(__file__).resolve().parents[2]
STAGES = {"features", "dit_step", "dit_per_step", "vae_decode", "colour", "vae_encode"}


@pytest.mark.parametrize("preset, motion, new", [("flashhead-pro", 5, 28), ("flashhead-lite", 9, 24)])
def test_bench_of_flashhead_reports_the_chunk_split_realtime_factor_and_batched_sessions(capsys, preset, motion, new):
    code = main(["bench", "--preset", preset, "--windows", "1", "--sessions", "1,2", "--threads", "1",
                 "--seed", "4"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    s = report["settings"]
    assert (s["shape"], s["preset"], s["size"], s["steps"]) == ("tiny", preset, [32, 32], 4)
    assert "TINY RANDOM" in s["model"] and s["weights"] == "tiny random release (temporary folder)"
    assert (s["frames_per_chunk"], s["motion_frames"], s["new_frames"]) == (33, motion, new)
    st = report["stages"]
    video_s = st["video_s_per_chunk"]
    assert st["new_frames"] == s["new_frames"] and video_s == pytest.approx(new / VIDEO_FPS)
    split = st["stages_s_per_chunk"]
    assert set(split) == STAGES and all(v > 0 for v in split.values()), split
    assert split["dit_per_step"] * s["steps"] == pytest.approx(split["dit_step"], abs=1e-3)
    # every stage runs inside the one timed chunk
    assert sum(v for k, v in split.items() if k != "dit_per_step") <= st["chunk_s_median"] + 1e-3
    assert st["chunk_s_median"] == st["chunk_s_min"] and st["first_chunk_s"] > 0
    assert st["realtime_factor"] == pytest.approx(video_s / st["chunk_s_median"], rel=2e-3)
    assert st["sessions_at_25fps_without_batching"] == int(video_s / st["chunk_s_median"])
    sessions = report["sessions"]
    (two,) = sessions["batched"]
    assert two["sessions"] == 2 and two["pass_s_median"] > 0
    assert two["realtime_factor_per_session"] == pytest.approx(video_s / two["pass_s_median"], rel=2e-3)
    assert two["all_sessions_realtime"] == (two["pass_s_median"] <= video_s)
    assert sessions["sessions_at_25fps_without_batching"] == st["sessions_at_25fps_without_batching"]
    assert sessions["sessions_at_25fps"] == max(st["sessions_at_25fps_without_batching"],
                                                2 if two["all_sessions_realtime"] else 0)
    assert report["peak_memory"]["kind"] == "cpu_peak_rss" and report["build_s"] > 0


@pytest.mark.parametrize("args,err", [
    (["--preset", "flashhead-lite", "--shape", "1.3b"], "Lite DiT's released sizes"),
    (["--preset", "flashhead-pro", "--only", "guidance"], "bench stages, sessions, not guidance"),
    (["--preset", "flashhead-pro", "--shape", "14b"], "--shape 14b is InfiniteTalk's"),
    (["--shape", "1.3b"], "--shape 1.3b is SoulX-FlashHead's"),
    (["--preset", "flashhead-pro", "--steps", "3"], "run [2, 4] steps, not 3"),
    pytest.param(["--preset", "flashhead-pro", "--shape", "1.3b", "--device", "cuda"], "CUDA is not available",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
])
def test_bench_flashhead_option_errors_say_what_to_do(capsys, args, err):
    assert main(["bench", *args]) == 2
    assert err in capsys.readouterr().err


def test_the_1_3b_builder_makes_a_working_model_on_the_device_at_tiny_sizes():
    """The path `--shape 1.3b` takes (meta build, to_empty and seeded fill on the device, the VAE and
    wav2vec2 built there), with the tiny release's sizes instead of the released ones."""
    model = flashhead.real_model("flashhead-pro", torch.device("cpu"), torch.float32, (32, 32),
                                 dit_config=TINY_CONFIG, vae_config=VAEConfig.tiny(), wav2vec2_config=TINY_WAV2VEC2_64)
    assert all(torch.isfinite(p).all() for p in model.dit.parameters())
    assert "RANDOM WEIGHTS" in model.description and model.new_frames == 28
    st = flashhead.chunk_stages(model, chunks=1)
    assert set(st["stages_s_per_chunk"]) == STAGES and st["realtime_factor"] > 0
    with pytest.raises(flashhead.NotAvailable, match="LTX-Video VAE"):
        flashhead.real_model("flashhead-lite", torch.device("cpu"), torch.float32)


def test_the_gpu_suite_runs_the_flashhead_pro_step_and_reports_lite_as_not_available(tmp_path):
    """`bench/gpu_suite.py --smoke`: the same steps on CPU at the tiny size; Lite's probe says why it cannot
    run, which is recorded and does not fail the suite."""
    done = subprocess.run([sys.executable, "bench/gpu_suite.py", "--smoke", "--only", "flashhead_pro,flashhead_lite",
                           "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    steps = json.loads((tmp_path / "results.json").read_text())["steps"]
    assert set(steps) == {"flashhead_pro", "flashhead_lite"}
    pro = steps["flashhead_pro"]
    assert pro["rc"] == 0 and pro["result"]["settings"]["preset"] == "flashhead-pro"
    assert set(pro["result"]["stages"]["stages_s_per_chunk"]) == STAGES
    assert "Lite DiT's released sizes" in steps["flashhead_lite"]["not_available"]
    assert "rc" not in steps["flashhead_lite"]
