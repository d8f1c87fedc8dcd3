"""fp8 block linears against bf16, one linear shape at a time (random weights). Prints JSON.

    python3 bench/fp8_linears.py --device cuda                 # the 14B block's linears at 448x448, 33 frames
    python3 bench/fp8_linears.py --device cuda --size 768x448  # FlashTalk's size
    python3 bench/fp8_linears.py                               # CPU: tiny shapes, fp8 emulated (checks the script)

For each distinct (tokens, in, out) of a DiT block (self-attention q/k/v/o, text and image cross-
attention, FFN, audio cross-attention) it times `F.linear` in bf16 and `FP8Linear` with per-row and
per-tensor activation scales, each whole call (quantising the activations included), and reports the
fp8 speed-up per linear and for one whole block (the linears weighted by how often a block runs them).
fp8 only pays where the matmul saved outweighs the activation quantiser: small-token linears (the
text and audio keys/values) may lose. On CPU fp8 is emulated (dequantise + fp32 matmul): not a speed.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from timing import best_seconds

from model.dit import DiTConfig
from model.dit.fp8_linear import FP8Linear


def block_linears(cfg: DiTConfig, video_tokens: int, latent_frames: int) -> dict[str, tuple[int, int, int, int]]:
    """name -> (tokens, in, out, uses per block) for one window of one speaker."""
    d, audio_tokens = cfg.dim, latent_frames * cfg.context_tokens
    return {
        "self_attn.q/k/v/o": (video_tokens, d, d, 4),
        "cross_attn.q/o, audio.q_linear/proj": (video_tokens, d, d, 4),
        "cross_attn.k/v (text)": (cfg.text_len, d, d, 2),
        "cross_attn.k_img/v_img": (cfg.clip_tokens, d, d, 2),
        "ffn.0": (video_tokens, d, cfg.ffn_dim, 1),
        "ffn.2": (video_tokens, cfg.ffn_dim, d, 1),
        "audio.kv_linear": (audio_tokens, cfg.output_dim, 2 * d, 1),
    }


def measure(tokens: int, k: int, n: int, device: torch.device, repeats: int) -> dict:
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(tokens, k, generator=g, device=device, dtype=torch.bfloat16)
    linear = torch.nn.Linear(k, n, device=device, dtype=torch.bfloat16)
    out = {"bf16_ms": best_seconds(lambda: F.linear(x, linear.weight, linear.bias), device, repeats) * 1e3}
    for mode in ("row", "tensor"):
        fp8 = FP8Linear.from_linear(linear, activations=mode)
        with torch.inference_mode():
            fp8(x)  # warm-up: the fused quantiser compiles on first use
            out[f"fp8_{mode}_ms"] = best_seconds(lambda fp8=fp8: fp8(x), device, repeats) * 1e3
        out[f"fp8_{mode}_speedup"] = out["bf16_ms"] / out[f"fp8_{mode}_ms"]
        out[f"fp8_{mode}_fast_path"] = not fp8._fast_failed and device.type == "cuda"
    return {key: round(v, 4) if isinstance(v, float) else v for key, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", default=None, help="video WxH (CUDA default 448x448; CPU 64x64)")
    ap.add_argument("--frames", type=int, default=33)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    cfg = DiTConfig.infinitetalk_14b() if cuda else DiTConfig.tiny()
    w, h = (int(v) for v in (args.size or ("448x448" if cuda else "64x64")).lower().split("x"))
    latent_frames = 1 + (args.frames - 1) // 4
    video_tokens = latent_frames * (h // 16) * (w // 16)
    rows, block = {}, {"bf16_ms": 0.0, "fp8_row_ms": 0.0, "fp8_tensor_ms": 0.0}
    for name, (tokens, k, n, uses) in block_linears(cfg, video_tokens, latent_frames).items():
        rows[name] = {"tokens": tokens, "in": k, "out": n, "uses_per_block": uses, **measure(tokens, k, n, device,
                                                                                               args.repeats)}
        for key in block:
            block[key] += rows[name][key] * uses
        print(json.dumps({"partial": True, "linears": rows}), flush=True)
    report = {
        "bench": "fp8_linears", "device": torch.cuda.get_device_name(device) if cuda else "cpu (fp8 emulated)",
        "torch": torch.__version__, "video": f"{w}x{h}x{args.frames}f", "video_tokens": video_tokens,
        "linears": rows,
        "block": {**{k: round(v, 3) for k, v in block.items()},
                  "fp8_row_speedup": round(block["bf16_ms"] / block["fp8_row_ms"], 3),
                  "fp8_tensor_speedup": round(block["bf16_ms"] / block["fp8_tensor_ms"], 3)},
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
