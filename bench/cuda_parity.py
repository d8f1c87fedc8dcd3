"""The golden parity cases on a chosen device and dtype: does the port give the reference's numbers on a GPU?

The test suite checks parity on CPU in fp32. This runs the same golden cases (the DiT with one and
two speakers, the VAE encode/decode, the CLIP tower) on `--device` (CUDA: the SDPA and cuDNN kernels
the server would use) in fp32 and, for the DiT, in bf16, and prints one JSON object with the largest
absolute and the relative error of each against the reference's outputs. TF32 is off for fp32.

    python3 bench/cuda_parity.py --device cuda            # golden from $INFINITETALK_GOLDEN or ../shared/golden
    python3 bench/cuda_parity.py                          # CPU (the suite's own check, for comparison)

Sizes are read from the golden configs. fp32 passes at the suite's tolerances (DiT 1e-4, VAE 1e-5,
CLIP 1e-4 in absolute error), except the VAE on CUDA at 1e-4: even with TF32 off, cuDNN picks among
fp32 convolution algorithms (implicit GEMM, Winograd, FFT) whose rounding differs from the CPU's
direct convolution by a few ulps per layer, and the tiny VAE stacks about twenty convolutions with
outputs near 1 (the CPU suite's 1e-5 is for one algorithm against another on the same CPU). bf16 is
reported, not judged.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from model.clip_vision import CLIPVisionConfig, CLIPVisionEncoder
from model.dit import DiTConfig, InfiniteTalkDiT
from model.vae import VAEConfig, WanVAE

TOLERANCE = {"dit": 1e-4, "vae": 1e-5, "clip": 1e-4}
CUDA_TOLERANCE = {**TOLERANCE, "vae": 1e-4}  # cuDNN's fp32 algorithms: see the module docstring


def _golden_dir(arg: str | None) -> Path:
    here = Path(__file__).resolve().parents[1]
    for candidate in (arg, os.environ.get("INFINITETALK_GOLDEN"), here / ".golden", here.parent / "shared" / "golden"):
        if candidate and (Path(candidate) / "dit_config.json").is_file():
            return Path(candidate)
    sys.exit("golden vectors not found: give --golden DIR or set INFINITETALK_GOLDEN")


def _errors(got: torch.Tensor, want: torch.Tensor) -> dict:
    diff = (got.float().cpu() - want.float()).abs()
    return {"max_abs": float(diff.max()), "rel": float(diff.norm() / want.float().norm().clamp_min(1e-12))}


def _judged(row: dict, kind: str, dtype: torch.dtype, device: torch.device) -> dict:
    if dtype == torch.float32:
        tolerance = (CUDA_TOLERANCE if device.type == "cuda" else TOLERANCE)[kind]
        row["tolerance"] = tolerance
        row["within_suite_tolerance"] = row["max_abs"] <= tolerance
    return row


def dit_cases(golden: Path, device: torch.device, dtype: torch.dtype) -> dict:
    cfg = DiTConfig.from_reference_kwargs(json.loads((golden / "dit_config.json").read_text()))
    with torch.device("meta"):
        model = InfiniteTalkDiT(cfg)
    weights = {k: v.to(device, dtype) for k, v in load_file(golden / "dit_weights.safetensors").items()}
    model.load_state_dict(weights, strict=True, assign=True)
    model.eval()
    clip_fea = load_file(golden / "dit_clip_fea.safetensors")["clip_fea"]
    out = {}
    for case in ("single", "two"):
        g = load_file(golden / f"dit_case_{case}.safetensors")
        inputs = dict(x=g["in.x"][None], t=g["in.t"], context=g["in.context"][None], clip_fea=clip_fea, y=g["in.y"],
                      audio=g["in.audio_frames"][:, g["in.audio_index"]][None], ref_target_masks=g["in.ref_target_masks"])
        inputs = {k: v.to(device, dtype if v.is_floating_point() and k != "t" else None) for k, v in inputs.items()}
        with torch.inference_mode():
            got = model(**inputs)
        out[case] = _judged(_errors(got, g["out"]), "dit", dtype, device)
    return out


def vae_cases(golden: Path, device: torch.device) -> dict:
    cfg = VAEConfig.from_reference_kwargs(json.loads((golden / "vae_config.json").read_text()))
    vae = WanVAE.from_state_dict(cfg, load_file(golden / "vae_weights.safetensors"), device=device)
    case = load_file(golden / "vae_case.safetensors")
    out = {}
    with torch.inference_mode():
        out["encode_video"] = _judged(_errors(vae.encode(case["video"][None].to(device))[0], case["enc_video"]),
                                      "vae", torch.float32, device)
        out["decode"] = _judged(_errors(vae.decode(case["z"][None].to(device))[0], case["dec"]), "vae", torch.float32, device)
    return out


def clip_case(golden: Path, device: torch.device) -> dict:
    cfg = CLIPVisionConfig.from_reference_kwargs(json.loads((golden / "clip_config.json").read_text()))
    enc = CLIPVisionEncoder.from_state_dict(cfg, load_file(golden / "clip_weights.safetensors")).to(device)
    case = load_file(golden / "clip_case.safetensors")
    with torch.inference_mode():
        got = enc.encode_image(case["image"].to(device))
    return _judged(_errors(got, case["features"]), "clip", torch.float32, device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--golden", help="golden folder (default: $INFINITETALK_GOLDEN, ./.golden, ../shared/golden)")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    golden = _golden_dir(args.golden)
    report: dict = {"bench": "cuda_parity", "device": str(device), "torch": torch.__version__, "golden": str(golden)}
    if device.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(device)
    report["dit_fp32"] = dit_cases(golden, device, torch.float32)
    report["dit_bf16"] = dit_cases(golden, device, torch.bfloat16)
    report["vae_fp32"] = vae_cases(golden, device)
    report["clip_fp32"] = clip_case(golden, device)
    checks = [r["within_suite_tolerance"] for part in ("dit_fp32", "vae_fp32") for r in report[part].values()]
    report["fp32_parity"] = all(checks) and report["clip_fp32"]["within_suite_tolerance"]
    print(json.dumps(report))


if __name__ == "__main__":
    main()
