"""Per-chunk time of SoulX-FlashHead live chunks (presets flashhead-pro / flashhead-lite), split by stage. Prints JSON.

    python bench/flashhead.py                                # CPU: the tiny random Pro release, 64x64
    python bench/flashhead.py --preset flashhead-lite        # CPU: the tiny random Lite release (LTX VAE), 64x64
    python bench/flashhead.py --shape real --device cuda     # one GPU: the 1.3B Pro shape at 512x512
    python bench/flashhead.py --vae-ratio                    # LTX vs Wan VAE at 512x512, same run (random weights)

A chunk is one live window as the server makes it (`FlashHeadGenerator.generate`): the rolling 8 s of
speech re-encoded by wav2vec2, 4 DiT calls, Wan VAE decode of 33 frames, colour match, VAE encode of
the last 5 frames as the next motion latents; it yields 28 new frames (1.12 s of video), so real time
needs chunk_s <= 1.12. The first chunk (kernel warm-up, cuDNN autotune) is reported apart.

`--shape real` builds the released sizes (Wan2.1-1.3B: 30 layers x 1536, 12 heads; Wan2.1 VAE;
wav2vec2-base 12 x 768) with random weights on the device; no checkpoint is read. Without cross-session
batching, sessions per GPU at 25 fps is floor(realtime_factor); `--sessions N ...` also times N sessions'
chunks made in one batched pass (`all_sessions_realtime`: the pass fits in the 1.12 s the chunk plays).

`--vae-ratio` times, in one run and interleaved, the two VAEs at the real chunk shapes with random weights:
decode of a 33-frame 512x512 window (Wan2.1: 16 x 9 x 64 x 64 latents; LTX-Video 0.9.0: 128 x 5 x 16 x 16)
and encode of the motion frames (Wan: 5 frames, LTX: 9), and prints the LTX / Wan ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import Wav2Vec2Config, Wav2Vec2Model

from model.dit.flashhead import FlashHeadDiT
from model.families import ModelOptions
from model.families.options import parse_size
from model.families.registry import build_model
from model.flashhead.assemble import FlashHeadModel
from model.flashhead.config import FlashHeadConfig
from model.flashhead.presets import PRESETS, SIZE
from model.flashhead.release import KIND_LABELS, KINDS, PRO
from model.flashhead.tiny import write_tiny_flashhead
from model.flashhead.vae import LtxChunkVAE, WanChunkVAE
from model.infinitetalk.timing import StageTimes
from model.timebase import VIDEO_FPS
from model.vae import VAEConfig, WanVAE
from model.vae.ltx_config import LtxVAEConfig
from model.vae.ltx_vae import LtxVAE
from streaming.backends.infinitetalk.flashhead import FlashHeadGenerator
from streaming.generator import Avatar, WindowJob

PRO_1_3B = {"dim": 1536, "in_dim": 32, "ffn_dim": 8960, "out_dim": 16, "text_dim": 4096, "freq_dim": 256,
            "eps": 1e-6, "vae_stride": [4, 8, 8], "patch_size": [1, 2, 2], "num_heads": 12, "num_layers": 30,
            "has_image_input": False}
"""Wan2.1-1.3B's sizes as a Model_Pro config.json states them (the audio adapter takes the reference's defaults)."""


def real_model(device: torch.device, dtype: torch.dtype) -> FlashHeadModel:
    cfg = FlashHeadConfig.from_kwargs(PRO_1_3B)
    with torch.device("meta"):
        dit = FlashHeadDiT(cfg.dit)
    dit = dit.to(dtype).to_empty(device=device).init_random_weights_(seed=0).eval().requires_grad_(False)
    torch.manual_seed(0)
    with torch.device(device):
        vae = WanVAE(VAEConfig.wan21()).eval().requires_grad_(False)
        wav2vec2 = Wav2Vec2Model(Wav2Vec2Config()).eval().requires_grad_(False)
    return FlashHeadModel(dit, WanChunkVAE(vae), wav2vec2, cfg, PRESETS[PRO], SIZE, PRO,
                          f"{KIND_LABELS[PRO]} shape, random weights")


def tiny_model(size: tuple[int, int], preset: str = PRO) -> FlashHeadModel:
    root = write_tiny_flashhead(Path(tempfile.mkdtemp(prefix="flashhead-tiny-")) / "SoulX-FlashHead-1_3B", kind=preset)
    return build_model(ModelOptions(weights=root, size=size, dtype="fp32", device="cpu"))


def vae_ratio(device: torch.device, repeats: int, frames: int = 33, motion_latents: int = 2) -> dict:
    """LTX vs Wan VAE at 512x512, random weights, timed alternately in one run (see the module docstring)."""
    torch.manual_seed(0)
    with torch.device(device):
        vaes = {"ltx": LtxChunkVAE(LtxVAE(LtxVAEConfig()).eval().requires_grad_(False)),
                "wan": WanChunkVAE(WanVAE(VAEConfig.wan21()).eval().requires_grad_(False))}
    h, w = SIZE
    latents = {k: torch.randn(v.latent_channels, (frames - 1) // v.temporal_stride + 1, h // v.spatial_stride,
                              w // v.spatial_stride, device=device) for k, v in vaes.items()}
    motion = {k: torch.rand(3, v.frames_for_latents(min(motion_latents, latents[k].shape[1])), h, w, device=device) * 2 - 1
              for k, v in vaes.items()}
    times: dict[str, list[float]] = {f"{k}_{op}": [] for k in vaes for op in ("decode", "encode")}
    with torch.inference_mode():
        warm = int(device.type == "cuda")  # a CUDA round warms kernels up and is not counted; CPU needs none
        for r in range(1 - warm, repeats + 1):
            for k, vae in vaes.items():
                for op, fn, x in (("decode", vae.decode, latents[k]), ("encode", vae.encode, motion[k])):
                    _sync(device)
                    t0 = time.perf_counter()
                    fn(x)
                    _sync(device)
                    if r:
                        times[f"{k}_{op}"].append(time.perf_counter() - t0)
                        print(f"{k} {op}: {times[f'{k}_{op}'][-1]:.2f} s", file=sys.stderr, flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"device": str(device), "threads": torch.get_num_threads(), "size": list(SIZE), "frames": frames,
            "repeats": repeats, "weights": "random (timing only)",
            "latents": {k: list(v.shape) for k, v in latents.items()},
            "motion_frames": {k: v.shape[1] for k, v in motion.items()},
            "seconds_median": {k: round(v, 3) for k, v in med.items()},
            "ltx_over_wan_decode": round(med["ltx_decode"] / med["wan_decode"], 4),
            "ltx_over_wan_motion_encode": round(med["ltx_encode"] / med["wan_encode"], 4)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(model: FlashHeadModel, chunks: int, seed: int) -> dict:
    gen = FlashHeadGenerator(model, seed=seed)
    device = model.dit.device
    rng = np.random.default_rng(seed)
    h, w = model.size
    state = gen.open_session("bench", Avatar("bench", rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8)))

    def one(index: int) -> float:
        audio = (0.1 * rng.standard_normal((1, gen.window.job_samples))).astype(np.float32)
        job = WindowJob("bench", index, index * gen.window.new_frames, audio, True)
        _sync(device)
        t0 = time.perf_counter()
        frames = sum(1 for _ in gen.generate(state, job))
        _sync(device)
        assert frames == gen.window.new_frames
        return time.perf_counter() - t0

    with torch.inference_mode():
        warm_s = one(0)
        state.chunker.times = StageTimes(device)
        chunk_s = [one(k + 1) for k in range(chunks)]
        stages = state.chunker.times.as_dict()
    video_s = gen.window.new_frames / VIDEO_FPS
    median = statistics.median(chunk_s)
    per_chunk = {k: round(v["seconds"] / chunks, 4) for k, v in stages.items()}
    per_chunk["dit_per_step"] = round(stages["dit_step"]["seconds"] / stages["dit_step"]["calls"], 4)
    return {
        "model": model.description, "device": str(device), "dit_dtype": str(model.dit.dtype).removeprefix("torch."),
        "size": list(model.size), "frames_per_chunk": model.chunk.frame_num, "motion_frames": model.motion_frames,
        "new_frames": gen.window.new_frames, "video_s_per_chunk": video_s, "steps": model.chunk.sampler.steps,
        "first_chunk_s": round(warm_s, 3), "chunk_s_median": round(median, 4), "chunk_s_min": round(min(chunk_s), 4),
        "realtime_factor": round(video_s / median, 3),
        "sessions_at_25fps_without_batching": int(video_s / median),
        "stages_s_per_chunk": per_chunk, "chunks": chunks,
    }


def bench_batched(model: FlashHeadModel, sessions: int, chunks: int, seed: int) -> dict:
    """`sessions` streams' chunks made in one batched pass each time (the engine's cross-session batching)."""
    gen = FlashHeadGenerator(model, seed=seed, max_batch=sessions)
    device = model.dit.device
    rng = np.random.default_rng(seed)
    h, w = model.size
    states = [gen.open_session(f"s{i}", Avatar(f"s{i}", rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8)))
              for i in range(sessions)]

    def one(index: int) -> float:
        jobs = [WindowJob(f"s{i}", index, index * gen.window.new_frames,
                          (0.1 * rng.standard_normal((1, gen.window.job_samples))).astype(np.float32), True)
                for i in range(sessions)]
        _sync(device)
        t0 = time.perf_counter()
        works = [gen.prepare_window(st, job) for st, job in zip(states, jobs, strict=True)]
        frames = sum(1 for _ in gen.generate_batch(works))
        _sync(device)
        assert frames == sessions * gen.window.new_frames
        return time.perf_counter() - t0

    with torch.inference_mode():
        one(0)
        median = statistics.median(one(k + 1) for k in range(chunks))
    video_s = gen.window.new_frames / VIDEO_FPS
    return {"sessions": sessions, "pass_s_median": round(median, 4),
            "realtime_factor_per_session": round(video_s / median, 3),
            "all_sessions_realtime": median <= video_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=["tiny", "real"], default="tiny")
    ap.add_argument("--preset", choices=KINDS, default=PRO, help="the tiny release's kind (real: Pro)")
    ap.add_argument("--vae-ratio", action="store_true", help="only the LTX vs Wan VAE timing at 512x512")
    ap.add_argument("--vae-frames", type=int, default=33,
                    help="frames of the --vae-ratio decode window (1 + 8k; 1 decodes one latent frame each)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default=None, help="DiT dtype (default: bf16 on cuda)")
    ap.add_argument("--size", type=parse_size, default=(64, 64), help="HEIGHTxWIDTH of the tiny shape (real: 512x512)")
    ap.add_argument("--chunks", type=int, default=3, help="timed chunks (after one warm-up chunk)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sessions", type=int, nargs="*", default=[2], help="also time N sessions batched per pass")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("CUDA is not available on this machine")
    if args.vae_ratio:
        print(json.dumps(vae_ratio(device, args.chunks, args.vae_frames), indent=1))
        return
    if args.shape == "real":
        dtype = torch.float32 if (args.dtype or ("bf16" if device.type == "cuda" else "fp32")) == "fp32" else torch.bfloat16
        model = real_model(device, dtype)
    else:
        model = tiny_model(args.size, args.preset)
    result = bench(model, args.chunks, args.seed)
    result["batched"] = [bench_batched(model, n, args.chunks, args.seed) for n in args.sessions if n > 1]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
