"""Speed options of the InfiniteTalk model, each measured against the plain path in the same run. JSON.

    python bench/speed_model.py                       # CPU, tiny random model (~1-2 min, 1 thread)
    python bench/speed_model.py --device cuda --preset 14b --size 448x448 --frames 33 --steps 4
    torchrun --nproc-per-node 2 bench/speed_model.py --device cuda --preset 14b --size 640x640 --steps 4

CPU (tiny model, one window of denoising unless noted; ratio = plain seconds / option seconds):
  plain (guidance branches as separate DiT calls) vs batched branches (one call per step), vs
  guidance-free (one branch), vs torch.compile of the blocks, vs TeaCache at a few thresholds (PSNR
  of the decoded window vs the plain one), fp8 block linears (emulated on CPU: accuracy, not
  speed), and the live runner's time from audio to first frame with and without `prepare_ahead()`.
CUDA (random weights: built on meta, materialised, random init; no checkpoint needed): seconds
  per DiT step and the real-time factor (new frames per window / window seconds / fps) without
  guidance and with audio guidance, bf16 vs fp8 (torch._scaled_mm), eager vs compiled vs CUDA
  graphs; under torchrun with more than one GPU the DiT runs sequence-parallel (Ulysses).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import statistics
import time

import torch

from model.dit import DiTConfig, InfiniteTalkDiT
from model.dit.fp8_linear import quantize_linears_
from model.dit.teacache import TeaCacheSettings
from model.infinitetalk import InfiniteTalkPipeline, TextConditioning, WindowCondition, WindowSettings
from model.sampling import GuidanceScales
from model.timebase import VIDEO_FPS
from model.vae import VAEConfig, WanVAE

FPS = float(VIDEO_FPS)
PRESETS = {
    "tiny": DiTConfig.tiny,
    "mid": lambda: DiTConfig(dim=512, ffn_dim=1536, num_heads=8, num_layers=8),
    "14b": DiTConfig.infinitetalk_14b,
}
GUIDED = GuidanceScales(5.0, 4.0)  # 3 branches (text + audio CFG, the reference default)
AUDIO_ONLY = GuidanceScales(1.0, 2.0)  # 2 branches (audio CFG, few-step LoRA setting)
FREE = GuidanceScales(1.0, 1.0)  # 1 branch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int, warmup: int = 1) -> tuple[float, object]:
    """Median seconds of `repeats` calls after `warmup` calls; also the last result."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two videos in [-1, 1] (peak-to-peak 2)."""
    mse = (a.float() - b.float()).pow(2).mean().item()
    return float("inf") if mse == 0 else round(10 * math.log10(4.0 / mse), 2)


def _rounded(d: dict) -> dict:
    return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in d.items()}


# ------------------------------------------------------------------------------------------------
def build_pipeline(cfg: DiTConfig, vae_cfg: VAEConfig, device: torch.device, dtype: torch.dtype,
                   vae_dtype: torch.dtype, clip=None) -> InfiniteTalkPipeline:
    with torch.device("meta"):
        dit = InfiniteTalkDiT(cfg)
    dit = dit.to(dtype=dtype).to_empty(device=device).init_random_weights_(seed=0).eval().requires_grad_(False)
    torch.manual_seed(0)
    with torch.device(device):
        vae = WanVAE(vae_cfg).to(vae_dtype).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    n_prompt, n_negative = min(12, cfg.text_len), min(20, cfg.text_len)
    text = TextConditioning(torch.randn(n_prompt, cfg.text_dim, generator=g),
                            torch.randn(n_negative, cfg.text_dim, generator=g))
    return InfiniteTalkPipeline(dit, vae, clip, text, device=device)


def window_inputs(pipe: InfiniteTalkPipeline, settings: WindowSettings, size: tuple[int, int]) -> tuple:
    """Random (condition, audio, motion latent, noise) for one window at `size` (W, H)."""
    cfg, device = pipe.dit.cfg, pipe.device
    w, h = size
    stride = pipe.vae_stride
    g = torch.Generator().manual_seed(2)
    t, lh, lw = settings.latent_frames, h // stride, w // stride
    cond = WindowCondition(
        torch.zeros(3, 1, h, w), torch.randn(1, cfg.clip_tokens, cfg.clip_dim, generator=g).to(device),
        torch.randn(cfg.y_dim, t, lh, lw, generator=g).to(device),
    )
    audio = torch.randn(1, settings.frame_num, cfg.audio_window, cfg.audio_layers, cfg.audio_width, generator=g)
    motion = pipe.encode_motion(torch.rand(3, settings.motion_frames, h, w, generator=g) * 2 - 1)
    noise = torch.randn(16, t, lh, lw, generator=g)
    return cond, audio.to(device), motion, noise


# ------------------------------------------------------------------------------------------------
def cpu_bench(args: argparse.Namespace) -> dict:
    from model.clip_vision import CLIPVisionEncoder
    from model.infinitetalk.live import LiveSource, LiveWindowRunner
    from model.infinitetalk.tiny import TINY_CLIP, tiny_dit_config

    device = torch.device("cpu")
    torch.set_num_threads(args.threads)
    # tiny: the test model (tiny wav2vec2 and CLIP widths); mid: real input widths, CLIP widened to match
    cfg = tiny_dit_config() if (args.preset or "tiny") == "tiny" else PRESETS[args.preset]()
    clip = CLIPVisionEncoder(dataclasses.replace(TINY_CLIP, dim=cfg.clip_dim))
    pipe = build_pipeline(cfg, VAEConfig.tiny(), device, torch.float32, torch.float32, clip.eval())
    size = tuple(int(v) for v in (args.size or "96x96").lower().split("x"))
    base = WindowSettings(frame_num=args.frames or 17, motion_frames=5, steps=args.steps or 10, shift=5.0,
                          guidance=GUIDED, colour_strength=0.0)
    inputs = window_inputs(pipe, base, size)
    results: dict = {"bench": "speed_model", "device": "cpu", "threads": args.threads, "preset": args.preset or "tiny",
                     "video": f"{size[0]}x{size[1]}x{base.frame_num}f", "steps": base.steps,
                     "tokens": base.latent_frames * (size[0] // 16) * (size[1] // 16),
                     "timing": f"CPU seconds of this process (1 thread: immune to other load), best of "
                               f"{args.repeats}, variants interleaved; ratio = plain / variant; wall_seconds for reference"}

    fp8_pipe = copy.copy(pipe)
    fp8_pipe.dit = copy.deepcopy(pipe.dit)
    fp8_pipe.dit_forward = fp8_pipe.dit
    quantize_linears_(fp8_pipe.dit, activations="row")
    variants = {  # name -> (pipeline, settings, extra fields)
        "plain_separate_branches": (pipe, dataclasses.replace(base, batch_branches=False), {"dit_calls_per_step": 3}),
        "batched_branches": (pipe, base, {"dit_calls_per_step": 1}),
        "guidance_free": (pipe, dataclasses.replace(base, guidance=FREE),
                          {"note": "one branch: another sampler (no CFG), so no PSNR"}),
        "fp8_rowwise_emulated": (fp8_pipe, base, {"note": "CPU emulation (dequantise + fp32 matmul): accuracy only"}),
    }
    # Random weights make the time embedding jump ~100% per step, so the reference's fitted polynomial
    # (for the real 14B) never skips here; the raw relative L1 (poly = x) shows the mechanism's cost.
    teacaches = [("reference_480p_poly", args.teacache_reference, None)]
    teacaches += [("raw_l1", thr, (1.0, 0.0)) for thr in args.teacache]
    for label, thr, coeffs in teacaches:
        tc = TeaCacheSettings(threshold=thr, warmup_steps=2, coefficients=coeffs)
        s = dataclasses.replace(base, teacache=tc)
        plan = pipe.teacache_plan(s)
        variants[f"teacache_{label}_{thr:g}"] = (pipe, s, {"steps_skipped": plan.count(False), "warmup_steps": 2})

    times: dict[str, list[float]] = {k: [] for k in variants}
    walls: dict[str, list[float]] = {k: [] for k in variants}
    latents: dict[str, torch.Tensor] = {}

    def clocked(name: str, p_: InfiniteTalkPipeline, s_: WindowSettings, record: bool = True) -> None:
        c0, w0 = time.process_time(), time.perf_counter()
        latents[name] = p_.denoise(*inputs, s_)
        if record:
            times[name].append(time.process_time() - c0)
            walls[name].append(time.perf_counter() - w0)

    for rep in range(args.repeats + 1):  # round-robin, first round = warm-up
        for name, (p_, s_, _) in variants.items():
            clocked(name, p_, s_, record=rep > 0)
    # torch.compile last (compiling takes most of this bench's time on CPU)
    t0 = time.perf_counter()
    pipe.dit.compile_blocks(backend=args.compile_backend)
    pipe.denoise(*inputs, dataclasses.replace(base, steps=1))
    compile_s = time.perf_counter() - t0
    name = f"batched_compiled_{args.compile_backend}"
    variants[name] = (pipe, base, {"compile_seconds": round(compile_s, 2)})
    times[name], walls[name] = [], []
    for _ in range(args.repeats):
        clocked(name, pipe, base)
    pipe.dit.decompile_blocks()

    plain_s = min(times["plain_separate_branches"])
    plain_video = pipe.decode(latents["plain_separate_branches"])
    rows = {}
    for name, (_, s_, extra) in variants.items():
        sec = min(times[name])
        row = {"cpu_seconds": sec, "wall_seconds": min(walls[name]), "speedup_vs_plain": plain_s / sec, **extra}
        if s_.guidance == base.guidance and name != "plain_separate_branches":
            row["psnr_vs_plain_db"] = psnr(pipe.decode(latents[name]), plain_video)
        rows[name] = _rounded(row)
    rows[name]["speedup_vs_batched_eager"] = round(min(times["batched_branches"]) / min(times[name]), 4)
    results["denoise"] = rows
    results["live_first_frame"] = live_latency(pipe, LiveSource, LiveWindowRunner, base, size, args.repeats)
    return results


def live_latency(pipe, LiveSource, LiveWindowRunner, base: WindowSettings, size: tuple[int, int], r: int) -> dict:
    """Seconds from a window's audio to its first frame, with the audio-free encodings done by prepare_ahead() or not."""
    w, h = size
    frames = torch.randint(0, 256, (2, h, w, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    source = LiveSource(frames, fps=12.5)  # a 2-frame looping video: each window conditions on a new frame
    settings = dataclasses.replace(base, guidance=AUDIO_ONLY, steps=2)
    cfg = pipe.dit.cfg
    audio = torch.randn(1, settings.frame_num, cfg.audio_window, cfg.audio_layers, cfg.audio_width)
    out = {}
    for prepared in (False, True):
        times = []
        for _ in range(r):
            runner = LiveWindowRunner(pipe, settings, max_cached_conditions=1)
            state = runner.start(source, seed=1)
            list(runner.window(state, audio, 0))
            first = settings.new_frames
            if prepared:
                runner.prepare_ahead(state, first)
            t0 = time.process_time()
            it = runner.window(state, audio, first)
            next(it)
            times.append(time.process_time() - t0)
            list(it)
        out["prepared" if prepared else "plain"] = round(min(times), 5)
    out["speedup"] = round(out["plain"] / out["prepared"], 3)
    out["note"] = "CPU seconds to the first frame; video avatar (new condition frame each window), 2 steps, 2 branches"
    return out


# ------------------------------------------------------------------------------------------------
def cuda_bench(args: argparse.Namespace) -> dict:
    from model.dit.parallel import init_from_env

    world = int(os.environ.get("WORLD_SIZE", "1"))
    sp = None
    if world > 1:
        sp, device = init_from_env()
    else:
        device = torch.device(args.device)
    cfg = PRESETS[args.preset or "14b"]()
    size = tuple(int(v) for v in (args.size or "448x448").lower().split("x"))
    vae_cfg = VAEConfig.wan21() if cfg.dim >= 1024 else VAEConfig.tiny()
    pipe = build_pipeline(cfg, vae_cfg, device, torch.bfloat16, torch.bfloat16)
    if sp is not None:
        pipe.dit.enable_sequence_parallel(sp)
    base = WindowSettings(frame_num=args.frames or 33, motion_frames=9, steps=args.steps or 4, shift=5.0,
                          guidance=FREE, colour_strength=0.0)
    inputs = window_inputs(pipe, base, size)
    r = args.repeats
    with torch.inference_mode():
        dec_s, _ = timed(lambda: pipe.decode(inputs[3].to(device)), device, r)
        enc_s, _ = timed(lambda: pipe.encode_motion(torch.zeros(3, base.motion_frames, size[1], size[0])), device, r)
    results: dict = {
        "bench": "speed_model", "device": torch.cuda.get_device_name(device), "world_size": world,
        "preset": args.preset or "14b", "video": f"{size[0]}x{size[1]}x{base.frame_num}f", "steps": base.steps,
        "tokens": base.latent_frames * (size[0] // 16) * (size[1] // 16), "new_frames": base.new_frames,
        "vae_decode_s": round(dec_s, 4), "vae_encode_motion_s": round(enc_s, 4),
    }
    rows: dict = {}

    def measure(name: str) -> None:
        for label, guidance in (("no_guidance", FREE), ("audio_guidance", AUDIO_ONLY)):
            s = dataclasses.replace(base, guidance=guidance)
            torch.cuda.reset_peak_memory_stats(device)
            with torch.inference_mode():
                sec, _ = timed(lambda s=s: pipe.denoise(*inputs, s), device, r, warmup=2)
            window = sec + dec_s + enc_s
            rows[f"{name}/{label}"] = _rounded({
                "step_s": sec / s.steps, "denoise_s": sec, "window_s": window,
                "realtime_factor": base.new_frames / window / FPS,
                "peak_gb": torch.cuda.max_memory_allocated(device) / 2**30,
            })
        # Each variant as it finishes, one JSON line: a run cut short by its time limit keeps what it measured.
        if sp is None or sp.rank == 0:
            print(json.dumps({**results, "variants": rows, "partial": True}), flush=True)

    variants = args.variants.split(",")
    if "eager" in variants:
        measure("bf16_eager")
    if "graphs" in variants:
        pipe.use_cuda_graphs(True)
        measure("bf16_cuda_graphs")
        pipe.use_cuda_graphs(False)
    if "compiled" in variants:
        pipe.dit.compile_blocks(mode=args.compile_mode)
        measure("bf16_compiled")
        pipe.dit.decompile_blocks()
    if any(v.startswith("fp8") for v in variants):
        quantize_linears_(pipe.dit, activations=args.fp8_activations)
        torch.cuda.empty_cache()
        if "fp8" in variants:
            measure(f"fp8_{args.fp8_activations}_eager")
        if "fp8_compiled" in variants:
            pipe.dit.compile_blocks(mode=args.compile_mode)
            measure(f"fp8_{args.fp8_activations}_compiled")
            if "graphs" in variants:
                pipe.use_cuda_graphs(True)
                measure(f"fp8_{args.fp8_activations}_compiled_cuda_graphs")
    ref = rows.get("bf16_eager/no_guidance")
    if ref:
        for k, v in rows.items():
            base_row = rows.get("bf16_eager/" + k.split("/")[1])
            v["speedup_vs_bf16_eager"] = round(base_row["step_s"] / v["step_s"], 3)
    results["variants"] = rows
    if sp is not None and sp.rank != 0:
        return {}
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--preset", choices=sorted(PRESETS), help="tiny on CPU, 14b on CUDA by default")
    p.add_argument("--size", help="video WxH (CPU default 96x96, CUDA 448x448)")
    p.add_argument("--frames", type=int, help="frames per window, 4n+1 (CPU 17, CUDA 33)")
    p.add_argument("--steps", type=int, help="sampling steps (CPU 10, CUDA 4)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="CPU threads (1: stable timings on a shared machine)")
    p.add_argument("--teacache", type=float, nargs="*", default=[1.0, 2.5],
                   help="TeaCache thresholds on the raw relative L1 (CPU, random weights)")
    p.add_argument("--teacache-reference", type=float, default=0.2, help="threshold with the reference 480p poly")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend (CPU: inductor or aot_eager)")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode on CUDA (e.g. max-autotune-no-cudagraphs)")
    p.add_argument("--fp8-activations", default="row", choices=["tensor", "row"])
    p.add_argument("--variants", default="eager,graphs,compiled,fp8,fp8_compiled",
                   help="CUDA variants to run, comma-separated")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("CUDA is not available on this machine")
    result = cuda_bench(args) if args.device == "cuda" else cpu_bench(args)
    if result:
        print(json.dumps(result, indent=1))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
