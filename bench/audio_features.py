"""Time the whole-clip wav2vec2 feature path per stage at the real (base) size, random weights.

    PYTHONPATH=. python bench/audio_features.py [--seconds 1 2 4 8] [--device cuda --dtype bfloat16]

Prints one JSON object: per clip length, the median milliseconds of each stage.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from transformers import Wav2Vec2Config, Wav2Vec2Model

from model.audio import (
    conv_features,
    encode_features,
    interpolate_features,
    loudness_normalize,
    normalize_input,
    num_video_frames,
)
from model.timebase import SAMPLE_RATE


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, nargs="+", default=[1.0, 2.0, 4.0, 8.0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    # chinese-wav2vec2-base = wav2vec2-base architecture: 12 layers x 768, group-norm conv stack, post-norm.
    model = Wav2Vec2Model(Wav2Vec2Config(attn_implementation="sdpa")).to(device, dtype).eval()
    rng = np.random.default_rng(0)
    results = {}
    for sec in args.seconds:
        wave = (0.1 * rng.standard_normal(int(sec * SAMPLE_RATE))).astype(np.float32)
        stages: dict[str, list[float]] = {"loudness": [], "normalize": [], "conv": [], "interp": [], "encoder": []}
        for _ in range(args.repeats + 1):  # first run is warm-up
            times = []
            t0 = time.perf_counter()
            x = loudness_normalize(wave)
            times.append(time.perf_counter())
            iv = normalize_input(x)
            times.append(time.perf_counter())
            feats = conv_features(model, iv)
            _sync(device)
            times.append(time.perf_counter())
            feats = interpolate_features(feats, num_video_frames(wave.shape[0]))
            _sync(device)
            times.append(time.perf_counter())
            encode_features(model, feats)
            _sync(device)
            times.append(time.perf_counter())
            for name, a, b in zip(stages, [t0] + times[:-1], times, strict=True):
                stages[name].append(1000 * (b - a))
        results[f"{sec:g}s"] = {k: round(statistics.median(v[1:]), 2) for k, v in stages.items()}
        results[f"{sec:g}s"]["total"] = round(sum(results[f"{sec:g}s"].values()), 2)
    print(json.dumps({"device": str(device), "dtype": args.dtype, "threads": torch.get_num_threads(),
                      "median_ms": results}, indent=1))


if __name__ == "__main__":
    main()
