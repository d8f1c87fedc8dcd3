"""Forward time and peak memory of the InfiniteTalk DiT (random weights). Prints JSON.

    python bench/dit_forward.py                      # CPU, float32: tiny and mid presets (< 1 min)
    python bench/dit_forward.py --device cuda --preset 14b --size 448x448 --frames 33 [--batch 3]

--size is the video size in pixels (WxH; latent = /8), --frames the video frames (latent T =
1 + (frames-1)/4). On CPU each preset runs in its own subprocess so its peak RSS is its own; on
CUDA peak memory is torch.cuda.max_memory_allocated. 14B on CUDA is built on the meta device,
materialised in bf16 and filled with random values (no checkpoint needed).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time

import torch

from model.dit import DiTConfig, InfiniteTalkDiT

PRESETS = {
    "tiny": (DiTConfig.tiny, "64x96", 9),
    # 512-wide, 8 layers, real audio/text/CLIP widths; a 240x416 (480p aspect) clip of 17 frames.
    "mid": (lambda: DiTConfig(dim=512, ffn_dim=1536, num_heads=8, num_layers=8), "416x240", 17),
    "14b": (DiTConfig.infinitetalk_14b, "448x448", 33),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def make_inputs(cfg: DiTConfig, batch: int, size: str, frames: int, speakers: int, device: str) -> dict:
    w, h = (int(v) for v in size.lower().split("x"))
    lat_t, lat_h, lat_w = 1 + (frames - 1) // 4, h // 8, w // 8
    g = torch.Generator(device=device).manual_seed(0)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, device=device)

    masks = torch.zeros(speakers + 1, lat_h, lat_w, device=device)
    for k in range(speakers):
        masks[k, :, k * lat_w // (speakers + 1) : (k + 1) * lat_w // (speakers + 1)] = 1
    masks[speakers] = (masks[:speakers].sum(0) == 0).float()
    return dict(
        x=rnd(batch, cfg.out_dim, lat_t, lat_h, lat_w),
        t=torch.full((batch,), 900.0, device=device),
        context=rnd(batch, min(cfg.text_len, 64), cfg.text_dim),
        clip_fea=rnd(batch, cfg.clip_tokens, cfg.clip_dim),
        y=rnd(batch, cfg.in_dim - cfg.out_dim, lat_t, lat_h, lat_w),
        audio=rnd(batch, speakers, cfg.video_frames(lat_t), cfg.audio_window, cfg.audio_layers, cfg.audio_width),
        ref_target_masks=masks,
    )


def bench_one(args: argparse.Namespace) -> dict:
    make_cfg, default_size, default_frames = PRESETS[args.preset]
    cfg = make_cfg()
    size, frames = args.size or default_size, args.frames or default_frames
    dtype = DTYPES[args.dtype or ("bfloat16" if args.device == "cuda" else "float32")]
    t0 = time.perf_counter()
    with torch.device("meta"):
        model = InfiniteTalkDiT(cfg)
    model = model.to(dtype=dtype).to_empty(device=args.device).init_random_weights_(seed=0).eval()
    build_s = time.perf_counter() - t0
    inputs = make_inputs(cfg, args.batch, size, frames, args.speakers, args.device)
    rss_model_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    with torch.inference_mode():
        for i in range(args.warmup + args.repeats):
            if cuda:
                torch.cuda.synchronize()
            t = time.perf_counter()
            out = model(**inputs)
            if cuda:
                torch.cuda.synchronize()
            if i >= args.warmup:
                times.append(time.perf_counter() - t)
    result = {
        "preset": args.preset,
        "device": args.device if not cuda else torch.cuda.get_device_name(),
        "dtype": str(dtype).removeprefix("torch."),
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "batch": args.batch,
        "speakers": args.speakers,
        "video": f"{size}x{frames}f",
        "latent": list(inputs["x"].shape[2:]),
        "tokens": int(inputs["x"][0, 0].numel() // math.prod(cfg.patch_size)),
        "build_s": round(build_s, 2),
        "forward_s_median": round(statistics.median(times), 4),
        "forward_s_min": round(min(times), 4),
        "repeats": args.repeats,
        "finite": bool(torch.isfinite(out).all()),
    }
    if cuda:
        result["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    else:
        result["rss_after_build_mb"] = round(rss_model_mb)
        result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        result["threads"] = torch.get_num_threads()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--preset", choices=sorted(PRESETS), help="default: tiny and mid on CPU, 14b on CUDA")
    p.add_argument("--size", help="video WxH in pixels (latent is /8)")
    p.add_argument("--frames", type=int, help="video frames, 1 + 4k")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--speakers", type=int, default=1)
    p.add_argument("--dtype", choices=sorted(DTYPES))
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("CUDA is not available on this machine")
    if args.preset:
        print(json.dumps(bench_one(args)))
        return
    presets = ["14b"] if args.device == "cuda" else ["tiny", "mid"]
    results = []
    for name in presets:  # one subprocess each, so peak RSS belongs to that preset alone
        cmd = [sys.executable, __file__, *sys.argv[1:], "--preset", name]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(json.dumps({"bench": "dit_forward", "results": results}, indent=1))


if __name__ == "__main__":
    main()
