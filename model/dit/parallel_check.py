"""Check that a sequence-parallel DiT forward equals the single-process one (tiny model).

    torchrun --nproc-per-node 2 -m model.dit.parallel_check          # NCCL on GPUs, gloo on CPU
    python -m model.dit.parallel_check --spawn 2                      # CPU: spawns 2 gloo processes itself
    ... --weights dit_weights.safetensors --config dit_config.json    # a given (e.g. golden) tiny model

Every rank builds the same model and inputs, runs each case once on its own (plain forward) and
once sequence-parallel, and rank 0 prints JSON with the largest difference per case. The token
counts are chosen odd, so the padding path runs whatever the world size.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from .config import DiTConfig
from .parallel import SequenceParallel, init_from_env
from .transformer import InfiniteTalkDiT

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Case:
    """One forward: speakers, batch (stacked branches), latent frames / height / width."""

    name: str
    speakers: int
    batch: int
    latent: tuple[int, int, int]
    seed: int


CASES = (
    Case("single", speakers=1, batch=1, latent=(3, 6, 6), seed=11),  # 3*3*3 = 27 tokens
    Case("two_speakers", speakers=2, batch=2, latent=(3, 6, 10), seed=12),  # 3*3*5 = 45 tokens
)


def case_inputs(cfg: DiTConfig, case: Case, device: torch.device | str = "cpu") -> dict:
    """Deterministic inputs for a case (same on every rank and in the single-process reference)."""
    g = torch.Generator().manual_seed(case.seed)
    frames, h, w = case.latent
    b, n = case.batch, case.speakers

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    masks = torch.zeros(n + 1, h, w)
    for k in range(n):  # speaker k owns a band of columns; the rest is background
        masks[k, :, k * w // (n + 1) : (k + 1) * w // (n + 1)] = 1
    masks[n] = (masks[:n].sum(0) == 0).float()
    inputs = dict(
        x=rnd(b, cfg.out_dim, frames, h, w),
        t=torch.rand(b, generator=g) * 1000,
        context=rnd(b, min(cfg.text_len, 7), cfg.text_dim),
        clip_fea=rnd(1, cfg.clip_tokens, cfg.clip_dim),
        y=rnd(1, cfg.in_dim - cfg.out_dim, frames, h, w),
        audio=rnd(b, n, cfg.video_frames(frames), cfg.audio_window, cfg.audio_layers, cfg.audio_width),
        ref_target_masks=masks,
    )
    return {k: v.to(device) for k, v in inputs.items()}


def build_model(weights: str | None, config: str | None, device: torch.device | str = "cpu") -> InfiniteTalkDiT:
    """The given model files, else DiTConfig.tiny() with seeded random weights."""
    if weights:
        from safetensors.torch import load_file

        cfg = DiTConfig.from_reference_kwargs(json.loads(Path(config).read_text())) if config else DiTConfig.tiny()
        with torch.device("meta"):
            model = InfiniteTalkDiT(cfg)
        model.load_state_dict(load_file(weights), strict=True, assign=True)
    else:
        model = InfiniteTalkDiT(DiTConfig.tiny()).init_random_weights_(seed=3)
    return model.to(device).eval().requires_grad_(False)


def run_cases(model: InfiniteTalkDiT, sp: SequenceParallel, device: torch.device) -> dict[str, dict]:
    """Each case plain and sequence-parallel on this rank -> {case: {max_abs_diff, tokens, outputs}}."""
    results = {}
    for case in CASES:
        inputs = case_inputs(model.cfg, case, device)
        with torch.no_grad():
            model.enable_sequence_parallel(None)
            plain = model(**inputs)
            model.enable_sequence_parallel(sp)
            before = sp.collectives
            parallel = model(**inputs)
            collectives = sp.collectives - before
            model.enable_sequence_parallel(None)
        grid = case.latent[0] * (case.latent[1] // 2) * (case.latent[2] // 2)
        results[case.name] = dict(
            tokens=grid, local_tokens=sp.shard(grid).local, collectives=collectives,
            max_abs_diff=float((plain - parallel).abs().max()), output=parallel.cpu(),
        )
    return results


def spawned_rank(rank: int, world: int, init_file: str, out_dir: str, weights: str | None, config: str | None) -> None:
    """Entry of one process started by torch.multiprocessing.spawn (gloo on CPU, file rendezvous)."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model = build_model(weights, config)
        results = run_cases(model, SequenceParallel(), torch.device("cpu"))
        torch.save({k: v["output"] for k, v in results.items()}, Path(out_dir) / f"rank{rank}.pt")
        summary = {k: {n: v[n] for n in ("tokens", "local_tokens", "collectives", "max_abs_diff")}
                   for k, v in results.items()}
        (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(summary))
    finally:
        dist.destroy_process_group()


def spawn(
    world: int,
    out_dir: str,
    weights: str | None = None,
    config: str | None = None,
    start_method: str = "spawn",
    timeout_s: float = 300.0,
) -> None:
    """Run the check in `world` gloo processes; each writes rank{r}.pt / rank{r}.json to out_dir.

    start_method "fork" skips re-importing torch in each child (several times faster on a small
    machine; fine from a single-threaded parent such as a test). Ranks still running after
    `timeout_s` are terminated and a TimeoutError is raised, so a stuck collective cannot hang a run.
    """
    import time

    import torch.multiprocessing as mp

    fd, init_file = tempfile.mkstemp(prefix="sp_rendezvous_")
    os.close(fd)
    os.unlink(init_file)  # the file store creates it
    try:
        ctx = mp.start_processes(spawned_rank, args=(world, init_file, out_dir, weights, config), nprocs=world,
                                 join=False, start_method=start_method)
        deadline = time.monotonic() + timeout_s
        while not ctx.join(timeout=1.0):
            if time.monotonic() > deadline:
                for proc in ctx.processes:
                    if proc.is_alive():
                        proc.terminate()
                raise TimeoutError(f"sequence-parallel check: ranks still running after {timeout_s:.0f} s")
    finally:
        if os.path.exists(init_file):
            os.unlink(init_file)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spawn", type=int, default=0, help="spawn this many gloo processes (CPU) instead of torchrun")
    p.add_argument("--weights", help="DiT weights (safetensors, reference key names)")
    p.add_argument("--config", help="dit_config.json of those weights (reference WanModel kwargs)")
    args = p.parse_args()
    if args.spawn:
        with tempfile.TemporaryDirectory() as out:
            spawn(args.spawn, out, args.weights, args.config)
            summary = {f"rank{r}": json.loads((Path(out) / f"rank{r}.json").read_text()) for r in range(args.spawn)}
        print(json.dumps({"check": "sequence_parallel", "world": args.spawn, "backend": "gloo", "ranks": summary}))
        return
    sp, device = init_from_env()
    try:
        model = build_model(args.weights, args.config, device)
        results = run_cases(model, sp, device)
        diffs = torch.tensor([v["max_abs_diff"] for v in results.values()], device=device)
        dist.all_reduce(diffs, op=dist.ReduceOp.MAX)
        if sp.rank == 0:
            print(json.dumps({
                "check": "sequence_parallel", "world": sp.world, "backend": dist.get_backend(),
                "cases": {k: {"tokens": v["tokens"], "max_abs_diff": float(d)} for (k, v), d in zip(results.items(), diffs, strict=True)},
            }))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
