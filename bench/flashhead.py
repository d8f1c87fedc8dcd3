"""Per-chunk time of SoulX-FlashHead live chunks (preset flashhead-pro), split by stage. Prints JSON.

    python bench/flashhead.py                                # CPU: the tiny random release, 64x64
    python bench/flashhead.py --shape real --device cuda     # one GPU: the 1.3B Pro shape at 512x512

The same measurement as `infinitetalk-live bench --preset flashhead-pro` (both run
`streaming.benchmark.flashhead`; see its docstring for what a chunk is): the stage split per chunk
(features, dit_step and dit_per_step, vae_decode, colour, vae_encode), the real-time factor (video
seconds per chunk / chunk seconds), and with `--sessions N ...` N sessions' chunks in one batched pass
(`all_sessions_realtime`: the pass fits in the video it makes). `--shape real` builds the released
sizes with random weights on the device; no checkpoint is read.
"""

from __future__ import annotations

import argparse
import json

import torch

from model.families import ModelOptions
from model.families.options import parse_size
from model.flashhead.release import PRO
from streaming.benchmark import flashhead


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=["tiny", "real"], default="tiny")
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
    dtype_name = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    if args.shape == "real":
        dtype = torch.float32 if dtype_name == "fp32" else torch.bfloat16
        model = flashhead.real_model(PRO, device, dtype, args.size or flashhead.SIZE)
    else:
        model = flashhead.loaded_model(ModelOptions(preset=PRO, size=args.size or (64, 64), dtype=dtype_name,
                                                    device=args.device, seed=args.seed))
    result = flashhead.run(model, args.shape, args.chunks, tuple(args.sessions), seed=args.seed)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
