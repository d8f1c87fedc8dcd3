"""Benchmark model.weights.load_module: seconds per GB and peak RSS, printed as JSON.

    python bench/load_weights.py [--size-mb 500] [--device cpu|cuda] [--dir DIR] [--keep]

Generates a Wan-named checkpoint of about --size-mb (fp32, in 3 shards with an index json, like the
original release) and an fp8 "scaled" ComfyUI-style single file of the same weights, then loads each in a
fresh child process: fp32 -> bf16, fp8-scaled -> bf16, and fp32 -> fp32 with both readers (pread, the
default, and safetensors' mmap). Peak RSS is the kernel high-water mark reset just before loading, so the
numbers are the load's own cost. Files are read from the page cache (warm) after generation.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

from model.weights import load_module

REPO = Path(__file__).resolve().parents[1]


class Attn(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))


class Block(nn.Module):
    def __init__(self, dim: int, ffn: int) -> None:
        super().__init__()
        self.self_attn, self.cross_attn = Attn(dim), Attn(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.GELU(), nn.Linear(ffn, dim))
        self.modulation = nn.Parameter(torch.zeros(1, 6, dim))


class BenchDiT(nn.Module):
    """Only the shapes and names matter: a stack of Wan-like blocks."""

    def __init__(self, dim: int, ffn: int, layers: int) -> None:
        super().__init__()
        self.patch_embedding = nn.Conv3d(36, dim, (1, 2, 2), (1, 2, 2))
        self.blocks = nn.ModuleList(Block(dim, ffn) for _ in range(layers))


def _dims(size_mb: float) -> dict:
    dim, ffn = 512, 2048
    per_block = (8 * (dim * dim + dim) + 2 * dim * ffn + dim + ffn + 8 * dim) * 4
    return {"dim": dim, "ffn": ffn, "layers": max(1, round(size_mb * 1e6 / per_block))}


def _generate(folder: Path, dims: dict) -> tuple[Path, Path]:
    from safetensors.torch import save_file

    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in BenchDiT(**dims).state_dict().items()}
    g = torch.Generator().manual_seed(0)
    keys = list(shapes)
    thirds = [keys[i::3] for i in range(3)]
    weight_map, fp8 = {}, {}
    for i, part in enumerate(thirds):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-00003.safetensors"
        sd = {k: torch.randn(shapes[k], generator=g) * 0.05 for k in part}
        save_file(sd, str(folder / name))
        weight_map.update({k: name for k in part})
        for k, v in sd.items():  # ComfyUI-style scaled fp8 of the same values
            if v.ndim == 2:
                s = v.abs().max() / torch.finfo(torch.float8_e4m3fn).max
                fp8[f"model.diffusion_model.{k}"] = (v / s).to(torch.float8_e4m3fn)
                fp8[f"model.diffusion_model.{k[:-len('.weight')]}.scale_weight"] = s.reshape(1)
            else:
                fp8[f"model.diffusion_model.{k}"] = v.to(torch.bfloat16)
        del sd
    fp8["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    single = folder / "bench_fp8_e4m3fn_scaled.safetensors"
    save_file(fp8, str(single))
    return index, single


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(field + r":\s+(\d+)", f.read()).group(1))


def child(path: str, dims: dict, opts: dict) -> dict:
    if "dtype" in opts:
        opts["dtype"] = getattr(torch, opts["dtype"])
    with torch.device("meta"):
        model = BenchDiT(**dims)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kb("VmRSS")
    report = load_module(model, path, **opts)
    if opts.get("device", "cpu") != "cpu":
        torch.cuda.synchronize()
    peak = _status_kb("VmHWM")
    model_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return {"seconds": report.seconds, "bytes_read": report.bytes_read, "model_bytes": model_bytes,
            "peak_growth_bytes": (peak - before) * 1024}


def run_case(name: str, path: Path, dims: dict, opts: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", str(path), json.dumps(dims), json.dumps(opts)],
                         capture_output=True, text=True, check=False)
    if out.returncode:
        return {"case": name, "error": out.stderr[-2000:]}
    r = json.loads(out.stdout.strip().splitlines()[-1])
    gb = r["bytes_read"] / 1e9
    return {
        "case": name,
        "file_gb": round(gb, 3),
        "model_gb": round(r["model_bytes"] / 1e9, 3),
        "seconds": round(r["seconds"], 3),
        "s_per_gb_read": round(r["seconds"] / gb, 3),
        "s_per_gb_loaded": round(r["seconds"] / (r["model_bytes"] / 1e9), 3),
        "peak_rss_growth_gb": round(r["peak_growth_bytes"] / 1e9, 3),
        "peak_over_model": round(r["peak_growth_bytes"] / r["model_bytes"], 3),
        "opts": opts,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=float, default=500)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dir", default=None, help="where to write the checkpoints (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child[0], json.loads(a.child[1]), json.loads(a.child[2]))))
        return
    dims = _dims(a.size_mb)
    tmp = tempfile.TemporaryDirectory(dir=a.dir) if not a.keep else None
    folder = Path(tmp.name if tmp else (a.dir or tempfile.mkdtemp()))
    try:
        index, fp8 = _generate(folder, dims)
        dev = {"device": a.device}
        cases = [
            run_case("fp32-sharded -> bf16", index, dims, {**dev, "dtype": "bfloat16"}),
            run_case("fp8-scaled single -> bf16", fp8, dims, {**dev, "dtype": "bfloat16"}),
            run_case("fp32-sharded -> fp32 (pread)", index, dims, {**dev}),
            run_case("fp32-sharded -> fp32 (mmap)", index, dims, {**dev, "reader": "mmap"}),
            run_case("fp32-sharded -> bf16, no read-ahead", index, dims, {**dev, "dtype": "bfloat16", "read_ahead": False}),
        ]
        print(json.dumps({"bench": "load_weights", "torch": torch.__version__, "dims": dims,
                          "page_cache": "warm", "cases": cases}, indent=1))
    finally:
        if tmp:
            tmp.cleanup()


if __name__ == "__main__":
    main()
