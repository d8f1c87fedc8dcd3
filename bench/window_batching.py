"""Benchmark: windows of N sessions made one after another vs in one batched pass (model level). Prints JSON.

Isolates what the worker's batching buys from the engine's scheduling: N live sessions' next
windows (each its own source, noise, motion frames) made with `LiveWindowRunner.window` one by
one, then with `LiveWindowRunner.windows` together (one motion encode, one DiT call per step, one
VAE decode stream). Reports seconds per round, the speed-up, and the per-stage split of both.

    python bench/window_batching.py [--sizes 32,64] [--sessions 1,2,4,8] [--threads 1]
    python bench/window_batching.py --shape 14b --device cuda --sizes 448 --frames 33 --steps 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from model.infinitetalk import StageTimes, WindowSettings
from model.infinitetalk.live import LiveSource, LiveWindowRunner
from model.sampling import GuidanceScales
from streaming.benchmark.models import random_bundle, real_shape


def tiny_pipe():
    import tempfile

    from model.infinitetalk import ModelFiles, load_bundle
    from model.infinitetalk.tiny import write_tiny_weights

    root = Path(tempfile.mkdtemp(prefix="bench-tiny-"))
    write_tiny_weights(root)
    return load_bundle(ModelFiles.discover(root), dtype=torch.float32).pipe


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(pipe, settings: WindowSettings, size: int, n: int, repeats: int) -> dict:
    device = pipe.device
    runner = LiveWindowRunner(pipe, settings)
    cfg = pipe.dit.cfg
    rng = np.random.default_rng(0)
    states = [runner.start(LiveSource(torch.from_numpy(rng.integers(0, 256, (1, size, size, 3), np.uint8))), seed=s)
              for s in range(n)]
    audio = torch.randn(1, settings.frame_num, cfg.audio_window, cfg.audio_layers, cfg.audio_width,
                        generator=torch.Generator().manual_seed(0))
    first = settings.new_frames
    for st in states:  # warm-up, and every session past its first window
        list(runner.window(st, audio, 0))
    seq, bat = [], []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        for st in states:
            list(runner.window(st, audio, first))
        sync(device)
        seq.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        list(runner.windows([runner.prepare(st, audio, first) for st in states]))
        sync(device)
        bat.append(time.perf_counter() - t0)
    split = {}
    for name, fn in (("one_by_one", lambda: [list(runner.window(st, audio, first)) for st in states]),
                     ("batched", lambda: list(runner.windows([runner.prepare(st, audio, first) for st in states])))):
        pipe.times = StageTimes(device)
        fn()
        split[name] = {k: round(v, 4) for k, v in pipe.times.seconds.items()}
        pipe.times = None
    s, b = statistics.median(seq), statistics.median(bat)
    return {"size": size, "sessions": n, "one_by_one_s": round(s, 4), "batched_s": round(b, 4),
            "batching_speedup": round(s / b, 3), "stage_seconds": split}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=["tiny", "14b"], default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--sizes", default="32,64", help="square generation sizes in pixels")
    p.add_argument("--sessions", default="1,2,4,8")
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--motion-frames", type=int, default=5)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.shape == "tiny":
        pipe = tiny_pipe()
    else:
        dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
        pipe = random_bundle(real_shape(), args.device, dtype).pipe
    settings = WindowSettings(frame_num=args.frames, motion_frames=args.motion_frames, steps=args.steps, shift=5.0,
                              guidance=GuidanceScales(1.0, 2.0))
    rows = [run(pipe, settings, int(size), int(n), args.repeats)
            for size in args.sizes.split(",") for n in args.sessions.split(",")]
    print(json.dumps({"bench": "window_batching", "shape": args.shape, "device": str(pipe.device),
                      "threads": torch.get_num_threads(), "frames": args.frames, "steps": args.steps,
                      "dit_calls_per_step_per_window": settings.guidance.calls_per_step, "results": rows}, indent=1))


if __name__ == "__main__":
    main()
