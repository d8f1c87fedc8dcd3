"""Approximation bounds of the model tests (split VAE, bf16, fp8) measured over random tiny models; prints JSON.

    python -m tests.bounds.model_bounds_sweep [--seeds 12] [--out sweep.json]

Models: tests/helpers/model_family.py (the golden generator's initialisation for VAEs, the tests'
`init_random_weights_` for DiTs, at several sizes and seeds). For each, the statistic a test bounds:

- split VAE (tests/model/test_vae_split.py): decode PSNR and encode relative error of 2 tiles vs
  the whole, on smooth random clips; and without a halo (what the bound must still catch);
- bf16 VAE decode (tests/model/test_vae_parity.py): mean absolute pixel error vs float32;
- bf16 DiT (tests/model/test_dit.py): relative error vs float32, 1 and 2 speakers, and how many
  tokens' speaker routing (an argmax over attention maps) flipped;
- fp8 DiT (tests/model/test_dit_fp8.py): relative error with fp8 block linears (row-wise activations).

docs/live_features.md ("Model bounds from a sweep") has the table and the bounds taken.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from tests.helpers import model_family as mf
from tests.helpers.golden_models import golden_vae

REPO = Path(__file__).resolve().parents[2]

VAE_SIZES = [dict(), dict(num_res_blocks=1), dict(dim=8), dict(dim=8, num_res_blocks=1), dict(dim=6)]
DIT_SIZES = [dict(), dict(dim=32, ffn_dim=64, num_heads=2, num_layers=1),
             dict(dim=128, ffn_dim=256, num_heads=8, num_layers=3), dict(dim=64, ffn_dim=256, num_heads=2, num_layers=4),
             dict(dim=96, ffn_dim=192, num_heads=4, num_layers=2)]


def _golden_dir() -> Path:
    env = os.environ.get("INFINITETALK_GOLDEN")
    return Path(env) if env else REPO.parent / "shared" / "golden"


def _r(x: float, n: int = 4) -> float:
    return round(float(x), n)


def _vae_row(vae, video: torch.Tensor, label: str) -> dict:
    dec_db, enc_rel = mf.split_closeness(vae, video)
    nohalo_db, nohalo_rel = mf.split_closeness(vae, video, decode_halo=0, encode_halo=0)
    row = {"vae": label, "decode_psnr_db": _r(dec_db, 2), "encode_rel": _r(enc_rel),
           "no_halo": [_r(nohalo_db, 2), _r(nohalo_rel)],
           "bf16_decode_mean_abs": _r(mf.vae_bf16_decode_error(vae, vae.encode(video)), 5)}
    print(f"vae {row}", file=sys.stderr, flush=True)
    return row


def vae_rows(golden: Path, seeds: int) -> list[dict]:
    """The golden file (its test clip: smooth_clip(0)), then every size at seeds 1000 * size + s."""
    rows = [_vae_row(golden_vae(golden), mf.smooth_clip(0), "golden file")]
    for i, sizes in enumerate(VAE_SIZES):
        cfg = mf.golden_vae_config(golden, **sizes)
        for s in range(seeds):
            seed = 1000 * i + s
            rows.append(_vae_row(mf.random_vae(cfg, seed), mf.smooth_clip(seed), f"{sizes or 'golden sizes'} s{seed}"))
    return rows


def dit_rows(seeds: int) -> list[dict]:
    rows = []
    for i, sizes in enumerate(DIT_SIZES):
        for s in range(seeds):
            seed = 100 * i + s
            cfg, dit = mf.random_dit(seed, **sizes)
            one = mf.dit_bf16_error(dit, mf.dit_inputs(cfg, b=2, speakers=1, seed=seed + 10))
            two = mf.dit_bf16_error(dit, mf.dit_inputs(cfg, b=2, speakers=2, seed=seed + 10))
            fp8 = mf.dit_fp8_error(dit, mf.dit_inputs(cfg, seed=seed, w=4))
            rows.append({"sizes": sizes or "tiny", "seed": seed, "bf16_rel_1spk": _r(one[0]), "bf16_rel_2spk": _r(two[0]),
                         "bf16_2spk_routing_flips": two[1], "bf16_2spk_flipped_share": _r(two[2], 3),
                         "fp8_rel": _r(fp8)})
            print(f"dit {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=12, help="seeds per size")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    golden = _golden_dir()
    vae, dit = vae_rows(golden, args.seeds), dit_rows(args.seeds)
    no_flip = [r["bf16_rel_2spk"] for r in dit if r["bf16_2spk_routing_flips"] == 0]
    result = {
        "vae": vae, "dit": dit,
        "worst": {
            "decode_psnr_db_min": min(r["decode_psnr_db"] for r in vae),
            "encode_rel_max": max(r["encode_rel"] for r in vae),
            "no_halo_decode_psnr_db_max": max(r["no_halo"][0] for r in vae),
            "no_halo_encode_rel_min": min(r["no_halo"][1] for r in vae),
            "halo_gain_db_min": _r(min(r["decode_psnr_db"] - r["no_halo"][0] for r in vae), 2),
            "halo_encode_ratio_min": _r(min(r["no_halo"][1] / r["encode_rel"] for r in vae), 2),
            "vae_bf16_decode_mean_abs_max": max(r["bf16_decode_mean_abs"] for r in vae),
            "dit_bf16_rel_1spk_max": max(r["bf16_rel_1spk"] for r in dit),
            "dit_bf16_rel_2spk_max": max(r["bf16_rel_2spk"] for r in dit),
            "dit_bf16_rel_2spk_max_without_routing_flips": max(no_flip) if no_flip else None,
            "dit_bf16_2spk_flipped_share_max": max(r["bf16_2spk_flipped_share"] for r in dit),
            "dit_fp8_rel_max": max(r["fp8_rel"] for r in dit),
        },
        "bench_seconds": round(time.perf_counter() - t0, 1),
    }
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
