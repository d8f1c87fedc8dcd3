"""Per-chunk time of SoulX-FlashHead live chunks (presets flashhead-pro / flashhead-lite), split by stage. Prints JSON.

    python bench/flashhead.py                                # CPU: the tiny random Pro release, 64x64
    python bench/flashhead.py --preset flashhead-lite        # CPU: the tiny random Lite release (LTX VAE), 64x64
    python bench/flashhead.py --shape real --device cuda     # one GPU: the 1.3B Pro shape at 512x512
    python bench/flashhead.py --vae-ratio                    # LTX vs Wan VAE at 512x512, same run (random weights)

The same measurement as `infinitetalk-live bench --preset flashhead-pro` (both run
`streaming.benchmark.flashhead`; see its docstring for what a chunk is): the stage split per chunk
(features, dit_step and dit_per_step, vae_decode, colour, vae_encode), the real-time factor (video
seconds per chunk / chunk seconds), and with `--sessions N ...` N sessions' chunks in one batched pass
(`all_sessions_realtime`: the pass fits in the video it makes). `--shape real` builds the released Pro
sizes with random weights on the device; no checkpoint is read.

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

import torch

from model.families import ModelOptions
from model.families.options import parse_size
from model.flashhead.presets import SIZE
from model.flashhead.release import KINDS, PRO
from model.flashhead.tiny import write_tiny_flashhead
from model.flashhead.vae import LtxChunkVAE, WanChunkVAE
from model.vae import VAEConfig, WanVAE
from model.vae.ltx_config import LtxVAEConfig
from model.vae.ltx_vae import LtxVAE
from streaming.benchmark import flashhead


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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=["tiny", "real"], default="tiny")
    ap.add_argument("--preset", choices=KINDS, default=PRO, help="the tiny release's kind (real: Pro only)")
    ap.add_argument("--vae-ratio", action="store_true", help="only the LTX vs Wan VAE timing at 512x512")
    ap.add_argument("--vae-frames", type=int, default=33,
                    help="frames of the --vae-ratio decode window (1 + 8k; 1 decodes one latent frame each)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default=None, help="DiT dtype (default: bf16 on cuda)")
    ap.add_argument("--size", type=parse_size, default=None,
                    help="HEIGHTxWIDTH (default: 64x64 for the tiny shape, 512x512 for the real one)")
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
    dtype_name = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    if args.shape == "real":
        dtype = torch.float32 if dtype_name == "fp32" else torch.bfloat16
        model = flashhead.real_model(PRO, device, dtype, args.size or flashhead.SIZE)
    else:
        root = Path(tempfile.mkdtemp(prefix="flashhead-tiny-")) / "SoulX-FlashHead-1_3B"
        model = flashhead.loaded_model(ModelOptions(weights=write_tiny_flashhead(root, kind=args.preset),
                                                    size=args.size or (64, 64), dtype=dtype_name,
                                                    device=args.device, seed=args.seed))
    result = flashhead.run(model, args.shape, args.chunks, tuple(args.sessions), seed=args.seed)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
