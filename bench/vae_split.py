"""Benchmark the VAE split into spatial tiles over several processes (`--vae-split`) against one process.

Random weights (the real Wan 2.1 VAE size by default); prints one JSON object from rank 0 with the
window decode and motion-frame encode times, whole vs split, their ratio, and what the split costs
in quality (PSNR of the split decode against the whole decode, relative error of the split encode).

    python bench/vae_split.py                                   # CPU: 2 gloo processes x 1 thread
    torchrun --nproc-per-node 2 bench/vae_split.py --device cuda --size 768x448 --frames 33

On CPU the processes share the machine's cores, so the fair baseline is one process with as many
threads as all the ranks together (`whole_all_threads`); `whole_one_thread` is one rank's share.
On CUDA each rank has its own GPU and the baseline is rank 0 alone.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from timing import best_seconds

from model.vae import VAEConfig, WanVAE
from model.vae.split import DECODE_HALO, ENCODE_HALO, split_decode_stream, split_encode
from model.vae.tiles import grid_shape


def _build(args: argparse.Namespace, device: torch.device) -> tuple[WanVAE, torch.Tensor, torch.Tensor]:
    """Same weights and inputs on every rank (seeded): the VAE, a smooth clip, and its latent."""
    torch.manual_seed(0)
    cfg = VAEConfig.tiny() if args.vae == "tiny" else VAEConfig.wan21()
    with torch.device(device):
        vae = WanVAE(cfg).eval().requires_grad_(False)
    h, w = args.size
    g = torch.Generator().manual_seed(1)
    clip = F.interpolate(torch.rand(1, 3 * args.frames, h // 16, w // 16, generator=g), size=(h, w), mode="bicubic")
    clip = (clip.view(1, 3, args.frames, h, w) * 1.8 - 0.9).clamp(-1, 1).to(device)
    with torch.inference_mode():
        z = vae.encode(clip)
    return vae, clip, z


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.float() - b.float()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(4.0 / mse)


def _run(rank: int, world: int, args: argparse.Namespace, init: str | None, out: str | None) -> None:
    if init is not None:  # CPU: spawned here, one thread per rank
        torch.set_num_threads(args.threads)
        dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
        device = torch.device("cpu")
    else:  # under torchrun
        device = torch.device(args.device)
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        vae, clip, z = _build(args, device)
        motion = clip[:, :, : args.encode_frames]
        result: dict = {}
        with torch.inference_mode():
            if rank == 0:
                whole = vae.decode(z)
                whole_latent = vae.encode(motion)
                result["whole_one_thread" if init else "whole"] = {
                    "decode_s": best_seconds(lambda: vae.decode(z), device, args.repeat),
                    "encode_s": best_seconds(lambda: vae.encode(motion), device, args.repeat),
                }
                if init is not None:
                    torch.set_num_threads(args.threads * world)
                    result["whole_all_threads"] = {
                        "decode_s": best_seconds(lambda: vae.decode(z), device, args.repeat),
                        "encode_s": best_seconds(lambda: vae.encode(motion), device, args.repeat),
                    }
                    torch.set_num_threads(args.threads)
            dist.barrier()

            def decode() -> list:
                return list(split_decode_stream(vae, z, halo=args.decode_halo))

            split_chunks = decode()
            split_latent = split_encode(vae, motion, halo=args.encode_halo)
            result["split"] = {"decode_s": best_seconds(decode, device, args.repeat),
                               "encode_s": best_seconds(lambda: split_encode(vae, motion, halo=args.encode_halo),
                                                 device, args.repeat)}
        if rank != 0:
            return
        split = torch.cat(split_chunks, dim=2)
        base = result.get("whole_all_threads", result.get("whole"))
        report = {
            "bench": "vae_split", "device": str(device), "world": world, "vae": args.vae,
            "size": f"{args.size[0]}x{args.size[1]}", "frames": args.frames, "latent": list(z.shape[1:]),
            "grid": list(grid_shape(z.shape[-2], z.shape[-1], world)), "threads_per_rank": args.threads,
            "decode_halo": args.decode_halo, "encode_halo": args.encode_halo, "encode_frames": args.encode_frames,
            **result,
            "decode_speedup": round(base["decode_s"] / result["split"]["decode_s"], 3),
            "encode_speedup": round(base["encode_s"] / result["split"]["encode_s"], 3),
            "decode_psnr_db": round(_psnr(split, whole), 2),
            "encode_rel_error": round(float((split_latent - whole_latent).norm() / whole_latent.norm()), 4),
        }
        if out is not None:
            Path(out).write_text(json.dumps(report))
        else:
            print(json.dumps(report))
    finally:
        dist.destroy_process_group()


def _size(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu (spawns --world gloo processes) or cuda (under torchrun)")
    ap.add_argument("--world", type=int, default=2, help="CPU: processes to spawn")
    ap.add_argument("--threads", type=int, default=1, help="CPU: threads per process")
    ap.add_argument("--vae", choices=["wan21", "tiny"], default="wan21")
    ap.add_argument("--size", type=_size, default=None, help="HEIGHTxWIDTH (default 128x128 on CPU, 768x448 on CUDA)")
    ap.add_argument("--frames", type=int, default=None, help="window frames, 4n+1 (default 9 on CPU, 33 on CUDA)")
    ap.add_argument("--encode-frames", type=int, default=5, help="motion frames re-encoded per window")
    ap.add_argument("--decode-halo", type=int, default=DECODE_HALO)
    ap.add_argument("--encode-halo", type=int, default=ENCODE_HALO)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    on_cuda = args.device.startswith("cuda")
    args.size = args.size or ((768, 448) if on_cuda else (128, 128))
    args.frames = args.frames or (33 if on_cuda else 9)
    if "RANK" in os.environ:  # torchrun
        _run(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), args, None, None)
        return
    if on_cuda:
        sys.exit("on CUDA run under torchrun: torchrun --nproc-per-node N bench/vae_split.py --device cuda")
    with tempfile.TemporaryDirectory() as tmp:
        init, out = os.path.join(tmp, "init"), os.path.join(tmp, "report.json")
        mp.start_processes(_run, args=(args.world, args, init, out), nprocs=args.world, start_method="fork")
        print(Path(out).read_text())


if __name__ == "__main__":
    main()
