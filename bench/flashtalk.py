"""Per-chunk time of SoulX-FlashTalk live windows (preset flashtalk) with 4 and 2 steps. Prints JSON.

    python bench/flashtalk.py                          # CPU: the tiny random FlashTalk folder, 32x32
    python bench/flashtalk.py --device cuda            # one GPU: the 14B shape at 768x448 (random weights)

A chunk is one live window as the server makes it (`LiveWindowRunner.window`): motion frames
encoded, 4 (or 2) DiT calls, VAE decode of 33 frames, colour match; it yields 28 new frames
(1.12 s of video at 25 fps), so real-time needs chunk_s <= 1.12. The first window of each run also
conditions on the avatar (CLIP + VAE encode of the image) and is reported apart as warmup.

On CUDA the 14B DiT is built on the meta device, materialised in bf16 and filled with random values;
the VAE (fp32 by default, --vae-dtype bf16 as FlashTalk runs it) and CLIP ViT-H/14 (fp16) are real-size
with random weights. No checkpoint is read.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from model.clip_vision import CLIPVisionConfig, CLIPVisionEncoder
from model.dit import DiTConfig, InfiniteTalkDiT
from model.infinitetalk import InfiniteTalkPipeline, ModelFiles, StageTimes, TextConditioning, load_bundle
from model.infinitetalk.live import LiveSource, LiveWindowRunner
from model.infinitetalk.presets import get_preset, preset_size
from model.infinitetalk.tiny import write_tiny_flashtalk_weights
from model.sampling import distilled_step_list
from model.vae import VAEConfig, WanVAE

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def real_size_pipeline(device: torch.device, vae_dtype: torch.dtype) -> InfiniteTalkPipeline:
    """The 14B FlashTalk shape with random weights (the DiT never touches host memory)."""
    with torch.device("meta"):
        dit = InfiniteTalkDiT(DiTConfig.infinitetalk_14b())
    dit = dit.to(torch.bfloat16).to_empty(device=device).init_random_weights_(seed=0).eval().requires_grad_(False)
    torch.manual_seed(0)
    with torch.device(device):
        vae = WanVAE(VAEConfig.wan21()).to(vae_dtype).eval().requires_grad_(False)
        clip = CLIPVisionEncoder(CLIPVisionConfig.vit_h14()).to(torch.float16).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    text = TextConditioning(torch.randn(24, dit.cfg.text_dim, generator=g), torch.randn(24, dit.cfg.text_dim, generator=g))
    return InfiniteTalkPipeline(dit, vae, clip, text, device)


def tiny_pipeline() -> InfiniteTalkPipeline:
    """The tiny random FlashTalk folder through detection, discovery and the loaders."""
    root = Path(tempfile.mkdtemp(prefix="flashtalk-tiny-"))
    write_tiny_flashtalk_weights(root)
    return load_bundle(ModelFiles.discover(root), dtype=torch.float32).pipe


def bench_steps(pipe: InfiniteTalkPipeline, steps: int, size: tuple[int, int], chunks: int, seed: int) -> dict:
    settings = dataclasses.replace(get_preset("flashtalk"), steps=steps, step_list=distilled_step_list(steps))
    runner = LiveWindowRunner(pipe, settings)
    h, w = size
    g = torch.Generator().manual_seed(seed)
    source = LiveSource(torch.randint(0, 256, (1, h, w, 3), generator=g, dtype=torch.uint8))
    state = runner.start(source, seed=seed)
    cfg = pipe.dit.cfg
    audio = torch.randn(1, settings.frame_num, cfg.audio_window, cfg.audio_layers, cfg.audio_width, generator=g)
    device = pipe.device

    def one(first_frame: int) -> tuple[float, float, int]:
        _sync(device)
        t0 = time.perf_counter()
        first = None
        n = 0
        for _ in runner.window(state, audio, first_frame):
            n += 1
            if first is None:
                first = time.perf_counter() - t0
        _sync(device)
        return time.perf_counter() - t0, first or 0.0, n

    with torch.inference_mode():
        warm_s, _, _ = one(0)  # conditions on the avatar, compiles kernels
        pipe.times = StageTimes(device)
        runs = [one((k + 1) * settings.new_frames) for k in range(chunks)]
        stages = pipe.times.as_dict()
        pipe.times = None
    chunk_s = [r[0] for r in runs]
    new_s = settings.new_frames / 25
    per_chunk = {k: round(v["seconds"] / chunks, 4) for k, v in stages.items()}
    return {
        "steps": steps,
        "timesteps": [round(t, 2) for t in settings.timesteps().tolist()],
        "new_frames": runs[0][2],
        "video_s_per_chunk": new_s,
        "first_window_s": round(warm_s, 3),
        "chunk_s_median": round(statistics.median(chunk_s), 4),
        "chunk_s_min": round(min(chunk_s), 4),
        "first_frame_s_median": round(statistics.median(r[1] for r in runs), 4),
        "realtime_factor": round(new_s / statistics.median(chunk_s), 3),
        "stages_s_per_chunk": per_chunk,
        "chunks": chunks,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--size", help="HEIGHTxWIDTH (default: cuda 768x448, the preset's; cpu 32x32)")
    ap.add_argument("--steps", type=int, nargs="+", default=[4, 2])
    ap.add_argument("--chunks", type=int, default=3, help="timed chunks per step count (after one warmup)")
    ap.add_argument("--vae-dtype", choices=sorted(DTYPES), default="fp32")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            ap.error("CUDA is not available on this machine")
        size = preset_size("flashtalk")
        t0 = time.perf_counter()
        pipe = real_size_pipeline(device, DTYPES[args.vae_dtype])
        model = "14b (random weights)"
    else:
        size = (32, 32)
        t0 = time.perf_counter()
        pipe = tiny_pipeline()
        model = "tiny random FlashTalk folder"
    build_s = time.perf_counter() - t0
    if args.size:
        size = tuple(int(v) for v in args.size.lower().split("x"))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    results = [bench_steps(pipe, s, size, args.chunks, args.seed) for s in args.steps]
    out = {
        "bench": "flashtalk",
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "model": model,
        "dit_dtype": str(pipe.dit.dtype).removeprefix("torch."),
        "vae_dtype": str(pipe.vae.dtype).removeprefix("torch."),
        "size_hxw": list(size),
        "build_s": round(build_s, 2),
        "results": results,
    }
    if device.type == "cuda":
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
