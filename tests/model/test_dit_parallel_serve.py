"""A window denoised with the DiT served across 2 gloo processes equals the single-process window."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file

from model.dit.parallel import SequenceParallel
from model.dit.parallel_serve import BroadcastingDiT, follow
from model.infinitetalk import WindowSettings
from model.sampling import GuidanceScales

from ..helpers.golden_models import golden_dit, loop_pipeline
from ..helpers.ranks import spawn_ranks

WORLD = 2
CASE = "i2v_cfg3"


def _settings(golden: Path) -> WindowSettings:
    common = json.loads((golden / "loop" / "settings.json").read_text())
    c = common["cases"][CASE]
    return WindowSettings(frame_num=common["common"]["frame_num"], motion_frames=common["common"]["motion_frame"],
                          steps=c["sampling_steps"], shift=c["shift"],
                          guidance=GuidanceScales(c["text_guide_scale"], c["audio_guide_scale"]))


def _window(pipe, golden: Path):
    w = load_file(golden / "loop" / f"{CASE}.windows.safetensors")
    audio = load_file(golden / "loop" / f"{CASE}.inputs.safetensors")["audio_emb"][w["w1.audio_rows"]][None]
    cond = pipe.condition(w["w1.cond_image"], _settings(golden).frame_num)
    return pipe.denoise(cond, audio, w["w1.motion_latent"], w["w1.noise"], _settings(golden))


def _rank(rank: int, init_file: str, out: str, golden: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        g = Path(golden)
        sp = SequenceParallel()
        if rank == 0:
            pipe = loop_pipeline(g, CASE)
            pipe.dit.enable_sequence_parallel(sp)
            pipe.dit = pipe.dit_forward = BroadcastingDiT(pipe.dit, sp)
            try:
                latent = _window(pipe, g)
            finally:
                pipe.dit.stop()
            torch.save({"latent": latent, "calls": pipe.dit.calls, "collectives": sp.collectives}, Path(out) / "rank0.pt")
        else:
            dit = golden_dit(g)
            dit.enable_sequence_parallel(sp)
            served = follow(dit, sp)
            torch.save({"served": served}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_a_window_served_by_two_processes_equals_one_process(golden_dir: Path, tmp_path: Path) -> None:
    spawn_ranks(_rank, (str(tmp_path), str(golden_dir)), WORLD)
    expected = _window(loop_pipeline(golden_dir, CASE), golden_dir)
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    settings = _settings(golden_dir)
    assert r0["calls"] == settings.steps and r1["served"] == r0["calls"]  # one batched call per step
    assert r0["collectives"] > 0  # the forward really ran split across the ranks
    torch.testing.assert_close(r0["latent"], expected, atol=1e-4, rtol=1e-4)


IDLE_TIMEOUT_S = 2.0


def _idle_rank(rank: int, init_file: str, out: str, golden: str) -> None:
    """Ranks under a 2 s collective timeout; rank 0 waits three times that before its first call."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=IDLE_TIMEOUT_S))
    try:
        g = Path(golden)
        sp = SequenceParallel()
        if rank == 0:
            pipe = loop_pipeline(g, CASE)
            pipe.dit.enable_sequence_parallel(sp)
            pipe.dit = pipe.dit_forward = BroadcastingDiT(pipe.dit, sp)
            try:
                time.sleep(3 * IDLE_TIMEOUT_S)  # no clients: the followers wait for work
                latent = _window(pipe, g)
            finally:
                pipe.dit.stop()
            torch.save({"latent": latent}, Path(out) / "rank0.pt")
        else:
            dit = golden_dit(g)
            dit.enable_sequence_parallel(sp)
            torch.save({"served": follow(dit, sp)}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_followers_wait_for_work_longer_than_the_collective_timeout(golden_dir: Path, tmp_path: Path) -> None:
    spawn_ranks(_idle_rank, (str(tmp_path), str(golden_dir)), WORLD)
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert r1["served"] == _settings(golden_dir).steps
    torch.testing.assert_close(r0["latent"], _window(loop_pipeline(golden_dir, CASE), golden_dir), atol=1e-4, rtol=1e-4)
