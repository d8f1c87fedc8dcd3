"""Benchmark the Wan VAE (encode / decode / time to first streamed frame) and the CLIP vision tower.

Random weights; prints one JSON object. Each CPU case runs in a fresh subprocess so its peak RSS is its own.

    python bench/vae_clip.py                  # CPU: tiny VAE, real-size VAE at 96x96, tiny CLIP, 2 ViT-H blocks
    python bench/vae_clip.py --device cuda    # + real size at 448x448 and 480x832, full ViT-H/14
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time

import torch
from timing import best_seconds

from model.clip_vision import CLIPVisionConfig, CLIPVisionEncoder
from model.vae import VAEConfig, WanVAE

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _peak_mb(device: str, rss_before_kb: int) -> dict[str, float]:
    if device == "cuda":
        return {"peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_rss_increase_mb": round(max(rss - rss_before_kb, 0) / 1024, 1)}



def bench_vae(case: dict) -> dict:
    device, dtype = case["device"], DTYPES[case["dtype"]]
    cfg = VAEConfig.tiny() if case["size"] == "tiny" else VAEConfig.wan21()
    torch.manual_seed(0)
    with torch.device(device):
        vae = WanVAE(cfg).to(dtype).eval().requires_grad_(False)
    t, h, w = case["frames"], case["height"], case["width"]
    video = torch.rand(1, 3, t, h, w, device=device) * 2 - 1
    with torch.inference_mode():
        if case["warmup"]:
            vae.decode(vae.encode(video[:, :, : 1 + cfg.temporal_stride]))
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        enc_s = best_seconds(lambda: vae.encode(video), device, case["repeat"])
        enc_mem = _peak_mb(device, rss0)
        z = vae.encode(video)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()

        def first_frame() -> None:
            next(iter(vae.decode_stream(z)))

        first_s = best_seconds(first_frame, device, case["repeat"])
        dec_s = best_seconds(lambda: vae.decode(z), device, case["repeat"])
        dec_mem = _peak_mb(device, rss0)
    n_out = cfg.pixel_frames(z.shape[2])
    return {
        **case,
        "params_m": round(sum(p.numel() for p in vae.parameters()) / 1e6, 2),
        "latent_shape": list(z.shape),
        "encode_s": round(enc_s, 4),
        "encode_ms_per_frame": round(1000 * enc_s / cfg.pixel_frames(z.shape[2]), 2),
        "encode_peak": enc_mem,
        "decode_s": round(dec_s, 4),
        "decode_ms_per_frame": round(1000 * dec_s / n_out, 2),
        "decode_first_frame_s": round(first_s, 4),
        "decode_peak": dec_mem,
    }


def bench_clip(case: dict) -> dict:
    device, dtype = case["device"], DTYPES[case["dtype"]]
    cfg = (
        CLIPVisionConfig(image_size=56, patch_size=14, dim=32, num_heads=2, num_layers=3)
        if case["size"] == "tiny"
        else CLIPVisionConfig.vit_h14()
    )
    blocks = case.get("blocks")
    if blocks:  # a few full-width blocks: CPU estimate of the real tower's per-block cost
        cfg = CLIPVisionConfig(num_layers=blocks + 1)
    torch.manual_seed(0)
    with torch.device(device):
        enc = CLIPVisionEncoder(cfg).to(dtype).eval().requires_grad_(False)
    image = torch.rand(case["batch"], 3, 1, 480, 832, device=device) * 2 - 1
    with torch.inference_mode():
        if case["warmup"]:
            enc.encode_image(image)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        sec = best_seconds(lambda: enc.encode_image(image), device, case["repeat"])
        mem = _peak_mb(device, rss0)
    n_blocks = len(enc.visual.transformer)
    return {
        **case,
        "blocks_run": n_blocks,
        "params_m": round(sum(p.numel() for p in enc.parameters()) / 1e6, 2),
        "ms_per_image": round(1000 * sec / case["batch"], 2),
        "peak": mem,
    }


def _run(case: dict) -> dict:
    torch.set_num_threads(case.pop("threads"))
    return bench_vae(case) if case["kind"] == "vae" else bench_clip(case)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="VAE/CLIP weights (reference: VAE fp32)")
    ap.add_argument("--frames", type=int, default=None, help="pixel frames (4n+1); default cpu 5, cuda 81")
    ap.add_argument("--repeat", type=int, default=None, help="timed runs, best kept; default cpu 1, cuda 3")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch threads; default cpu 1 (steadier on a shared box)"
    )
    args = ap.parse_args()
    dev = args.device
    if dev == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but torch.cuda.is_available() is False")
    frames = args.frames or (81 if dev == "cuda" else 5)
    repeat = args.repeat or (3 if dev == "cuda" else 1)
    threads = args.threads or (1 if dev == "cpu" else torch.get_num_threads())
    common = {"device": dev, "dtype": args.dtype, "repeat": repeat, "threads": threads}

    cases: list[dict] = [
        {"kind": "vae", "size": "tiny", "frames": frames, "height": 64, "width": 64, "warmup": True},
        {"kind": "vae", "size": "wan21", "frames": 5, "height": 96, "width": 96, "warmup": dev == "cuda"},
        {"kind": "clip", "size": "tiny", "batch": 1, "warmup": True},
    ]
    if dev == "cpu":
        cases.append({"kind": "clip", "size": "vit_h14", "blocks": 2, "batch": 1, "warmup": False})
    else:
        cases += [
            {"kind": "vae", "size": "wan21", "frames": frames, "height": 448, "width": 448, "warmup": True},
            {"kind": "vae", "size": "wan21", "frames": frames, "height": 480, "width": 832, "warmup": True},
            {"kind": "clip", "size": "vit_h14", "batch": 1, "warmup": True},
            {"kind": "clip", "size": "vit_h14", "batch": 4, "warmup": True},
        ]
    results = []
    t0 = time.perf_counter()
    if dev == "cpu":
        with mp.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
            results = [pool.apply(_run, ({**common, **c},)) for c in cases]
    else:
        results = [_run({**common, **c}) for c in cases]
        torch.cuda.empty_cache()
    out = {
        "bench": "vae_clip",
        "torch": torch.__version__,
        "device_name": torch.cuda.get_device_name() if dev == "cuda" else "cpu",
        "threads": threads,
        "wall_s": round(time.perf_counter() - t0, 1),
        "results": results,
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
