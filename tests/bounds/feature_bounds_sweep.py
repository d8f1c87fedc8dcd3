"""The live-feature test bounds measured over a family of random tiny wav2vec2 models; prints JSON.

    python -m tests.bounds.feature_bounds_sweep [--seeds 2] [--random 100] [--quick] [--out sweep.json]
    python -m tests.bounds.feature_bounds_sweep --live 12      (only the live-paced alignment)

A bound on an approximation must hold for the family of inputs, not only for the one file it was
tuned on. Models: tests/helpers/w2v_family.py (the golden generator's initialisation and
transformers' own, at several sizes and seeds, written to disk and loaded through the real
loader). Speech: ../shared/audio (or $INFINITETALK_TEST_AUDIO). For every model this measures each
statistic a test in tests/streaming/test_speech_features.py bounds, then reports per family the
worst case and whether the tests' bounds (tests/helpers/feature_bounds.py) hold. The table in
docs/live_features.md ("Bounds from a sweep") comes from this script.

--live N: instead, N live-paced sessions of the tiny InfiniteTalk model, each with another wav2vec2
(the DiT takes 2 layers x 32: the rest varies), measuring what tests/streaming/
test_live_feature_alignment.py bounds (real time: about 7 s each; run it on an idle machine).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from transformers import Wav2Vec2Model

from model.audio import load_wav2vec2
from model.timebase import SAMPLE_RATE
from streaming.features import FeatureSettings
from tests.helpers import feature_bounds as fb
from tests.helpers import feature_measures as fm
from tests.helpers.golden_init import golden_init_
from tests.helpers.lite import read_wav_16k
from tests.helpers.live_alignment import live_alignment_cosines
from tests.helpers.tiny_infinitetalk import tiny_bundle, tiny_generator
from tests.helpers.w2v_family import SUITE, Member, W2VShape, build, live_cosines, mean_p5, random_shape
from tests.helpers.w2v_models import frame_aligned

REPO = Path(__file__).resolve().parents[2]

SPEECH = ("speech_en1", "speech_en2", "speech_de1")

SHAPES = [
    W2VShape(),  # the public golden's sizes
    W2VShape(hidden=16, layers=1, heads=1, ffn=32, conv_dim=8, pos_kernel=8, pos_groups=2),
    W2VShape(hidden=24, layers=2, heads=2, ffn=48, conv_dim=12, pos_kernel=16, pos_groups=4),
    W2VShape(hidden=32, layers=3, heads=4, ffn=128, conv_dim=32, pos_kernel=8, pos_groups=4),
    W2VShape(hidden=48, layers=3, heads=4, ffn=96, conv_dim=24, pos_kernel=16, pos_groups=4),
    W2VShape(hidden=64, layers=4, heads=4, ffn=128, conv_dim=32, pos_kernel=16, pos_groups=8),
    W2VShape(hidden=64, layers=2, heads=8, ffn=256, conv_dim=16, pos_kernel=12, pos_groups=16),
    W2VShape(hidden=32, layers=2, heads=2, ffn=64, conv_dim=16, pos_kernel=18, pos_groups=4),
    W2VShape(hidden=32, layers=2, heads=2, ffn=64, conv_dim=16, pos_kernel=32, pos_groups=8),
    W2VShape(hidden=48, layers=2, heads=2, ffn=96, conv_dim=16, pos_kernel=64, pos_groups=8),
    W2VShape(hidden=32, layers=2, heads=2, ffn=64, conv_dim=16, pos_kernel=128, pos_groups=16),
    W2VShape(norm="layer"),
    W2VShape(hidden=48, layers=3, heads=4, ffn=96, conv_dim=24, norm="layer"),
]
# The worst models of an earlier, differently sampled sweep (closeness only), kept so they stay measured.
EXTRA = [
    Member(W2VShape(hidden=16, layers=3, heads=2, ffn=32, conv_dim=12, pos_kernel=64, pos_groups=16, norm="layer"),
           866149),
    Member(W2VShape(hidden=16, layers=3, heads=1, ffn=32, conv_dim=16, pos_kernel=32, pos_groups=2), 15687),
]
QUICK_SHAPES = [SHAPES[0], SHAPES[1], SHAPES[4], SHAPES[8], SHAPES[10], SHAPES[11]]


def _audio_dir() -> Path:
    env = os.environ.get("INFINITETALK_TEST_AUDIO")
    return Path(env) if env else REPO.parent / "shared" / "audio"


def _golden_dir() -> Path:
    env = os.environ.get("INFINITETALK_GOLDEN")
    return Path(env) if env else REPO.parent / "shared" / "golden"


def _r(x: float) -> float:
    return round(float(x), 4)


def measure(model: Wav2Vec2Model, clips: list[np.ndarray]) -> dict:
    """Every statistic the live-feature tests bound, for one model."""
    curve = fm.lookahead_curve(model, clips)
    default = mean_p5(curve[FeatureSettings().lookahead_frames])
    conv_first, conv_last = fm.running_stats_convergence(model, clips[0])
    silence = fm.leading_silence_errors(model, clips[0][: 3 * SAMPLE_RATE])
    short = frame_aligned(clips[0], 2.0)
    return {
        "default_mean": _r(default[0]), "default_p5": _r(default[1]),
        "min": _r(torch.cat(curve[FeatureSettings().lookahead_frames]).min()),
        "lookahead_mean_p5": {la: [_r(v) for v in mean_p5(curve[la])] for la in fm.LOOKAHEADS},
        **{k: _r(v) for k, v in fm.lookahead_figures(curve).items()},
        "cached_minus_recompute": _r(fm.cached_minus_recompute(model, clips)),
        "broken": {k: [_r(a), _r(b)] for k, (a, b) in fm.broken_paths(model, clips).items()},
        "conv_running_stats_first5_last1s": [_r(conv_first), round(conv_last, 6)],
        "leading_silence_err_gate_nogate": [float(f"{silence[1e-3]:.3g}"), float(f"{silence[0.0]:.3g}")],
        "bf16_cosine": _r(fm.bf16_cosine(model, short)),
        "loudness_gain_rel_effect": float(f"{fm.loudness_gain_effect(model, frame_aligned(clips[2], 3.0)):.3g}"),
    }


def _grow(worst: float) -> float:
    """The rule (tests/helpers/feature_bounds.py): a cosine's distance from 1 grown by 25 %."""
    return 1 - 1.25 * (1 - worst)


def _costs(row: dict) -> dict[str, float]:
    default = (row["default_mean"], row["default_p5"])
    return {k: _r(fb.cost(default, tuple(v))) for k, v in row["broken"].items()}


def _violations(row: dict) -> list[str]:
    """Which of the tests' bounds this model breaks (empty: all hold)."""
    b = fb.FAMILIES[row["family"]]
    out = []
    if not fb.closeness_ok(b, row["default_mean"], row["default_p5"]):
        out.append("closeness")
    if row["cached_minus_recompute"] < -b.cached_behind_max:
        out.append("cached_behind_recompute")
    if row["worst_clip_mean_drop"] > b.lookahead_clip_mean_drop_max or row["worst_p5_drop"] > b.lookahead_p5_drop_max:
        out.append("lookahead_drop")
    if b.lookahead_gain_min is not None and row["gain_longest_vs_none"] <= b.lookahead_gain_min:
        out.append("lookahead_gain")
    costs = _costs(row)
    if costs["one_frame_late"] < fb.ONE_FRAME_LATE_COST_MIN:
        out.append("one_frame_late_cost")
    if not row["family"].endswith("far"):
        if fb.closeness_ok(b, *row["broken"]["one_frame_late"]):
            out.append("one_frame_late_not_caught")
        if costs["silent_lookahead"] < fb.SILENT_LOOKAHEAD_COST_MIN:
            out.append("silent_lookahead_not_caught")
        if row["family"] == "golden-near" and costs["no_left_context"] < fb.NO_LEFT_CONTEXT_COST_MIN:
            out.append("no_left_context_not_caught")
    first, last = row["conv_running_stats_first5_last1s"]
    if not (last > fb.CONV_LAST_SECOND_MIN and first < last):
        out.append("conv_running_stats")
    gate, no_gate = row["leading_silence_err_gate_nogate"]
    if not (gate < fb.LEADING_SILENCE_MAX and no_gate > 10 * gate):
        out.append("leading_silence")
    if row["bf16_cosine"] <= fb.BF16_COSINE_MIN:
        out.append("bf16")
    if row["loudness_gain_rel_effect"] >= fb.LOUDNESS_EFFECT_MAX:
        out.append("loudness")
    return out


def _worst(rows: list[dict], extra: list[dict]) -> dict:
    """The worst case of each statistic over these models (and the closeness of `extra`), the bound the
    rule derives from it, and which models break today's bounds."""
    def col(key: str) -> list[float]:
        return [r[key] for r in rows + (extra if key.startswith("default_") else [])]

    costs = [_costs(r) for r in rows]
    worst = {
        "models": len(rows), "closeness_only_models": len(extra),
        "default_mean_min": min(col("default_mean")), "default_p5_min": min(col("default_p5")),
        "cached_minus_recompute_min": min(col("cached_minus_recompute")),
        "lookahead_clip_mean_drop_max": max(col("worst_clip_mean_drop")),
        "lookahead_p5_drop_max": max(col("worst_p5_drop")),
        "lookahead_gain_min": min(col("gain_longest_vs_none")),
        "broken_mean_p5_max": {k: [max(r["broken"][k][0] for r in rows), max(r["broken"][k][1] for r in rows)]
                               for k in rows[0]["broken"]},
        "broken_cost_min": {k: min(c[k] for c in costs) for k in costs[0]},
        "conv_last1s_min": min(r["conv_running_stats_first5_last1s"][1] for r in rows),
        "leading_silence_gate_max": max(r["leading_silence_err_gate_nogate"][0] for r in rows),
        "bf16_cosine_min": min(col("bf16_cosine")),
        "loudness_gain_rel_effect_max": max(col("loudness_gain_rel_effect")),
    }
    worst["derived"] = {
        "mean_min": _r(_grow(worst["default_mean_min"])), "p5_min": _r(_grow(worst["default_p5_min"])),
        "cached_behind_max": _r(-1.25 * min(0.0, worst["cached_minus_recompute_min"])),
        "lookahead_clip_mean_drop_max": _r(1.25 * worst["lookahead_clip_mean_drop_max"]),
        "lookahead_p5_drop_max": _r(1.25 * worst["lookahead_p5_drop_max"]),
        "lookahead_gain_min": _r(worst["lookahead_gain_min"] / 1.25),
        "broken_cost_min": {k: _r(v / 1.25) for k, v in worst["broken_cost_min"].items()},
    }
    worst["violations"] = {r["label"]: v for r in rows if (v := _violations(r))}
    worst["violations"].update({r["label"]: ["closeness"] for r in extra
                                if not fb.closeness_ok(fb.FAMILIES[r["family"]], r["default_mean"], r["default_p5"])})
    return worst


def summarise(result: dict) -> dict:
    """Per family: worst cases, the bounds the rule derives, the bounds the tests use, and violations."""
    rows = [result["golden_file"], *result["models"]]
    extra = result.get("closeness_models", [])  # --closeness-only runs: (mean, p5) alone
    families = sorted({r["family"] for r in rows})
    result["worst_by_family"] = {f: _worst([r for r in rows if r["family"] == f],
                                           [r for r in extra if r["family"] == f]) for f in families}
    result["worst_overall"] = _worst(rows, extra)
    result["bounds"] = {f: fb.FAMILIES[f].__dict__ for f in families}
    result["global_bounds"] = {k: v for k, v in vars(fb).items() if k.isupper() and isinstance(v, float)}
    return result


def markdown(result: dict) -> str:
    """The tables of docs/live_features.md: per family, then per model (golden file, suite, grid)."""
    out = ["| family | models | worst mean / p5 | bound mean / p5 | worst cached - recompute | bound |",
           "|---|---|---|---|---|---|"]
    for f, w in result["worst_by_family"].items():
        b = result["bounds"][f]
        p5 = "none" if b["p5_min"] is None else b["p5_min"]
        out.append(f"| {f} | {w['models']} + {w['closeness_only_models']} | {w['default_mean_min']:.4f} / {w['default_p5_min']:.4f} | "
                   f"{b['mean_min']} / {p5} | {w['cached_minus_recompute_min']:+.4f} | -{b['cached_behind_max']} |")
    out += ["", "| model | family | mean / p5 | look-ahead 0 / 4 / 8 / 16 (mean) | cached - recompute | "
            "costs: silent look-ahead / no left context / one frame late |", "|---|---|---|---|---|---|"]
    rows = [result["golden_file"], *[r for r in result["models"] if r.get("set") in ("suite", "extra", "grid")]]
    for r in rows:
        la = " / ".join(f"{v[0]:.3f}" for v in r["lookahead_mean_p5"].values())
        c = _costs(r)
        out.append(f"| {r['label']} | {r['family']} | {r['default_mean']:.4f} / {r['default_p5']:.4f} | {la} | "
                   f"{r['cached_minus_recompute']:+.4f} | {c['silent_lookahead']:.3f} / {c['no_left_context']:.3f} / "
                   f"{c['one_frame_late']:.3f} |")
    return "\n".join(out)


def live_rows(n: int, rng: random.Random, speech: np.ndarray, tmp: Path, family: str | None = None) -> list[dict]:
    """The live-paced alignment statistic for the tiny bundle's own wav2vec2 and n random others (of
    `family` only, when given)."""
    bundle = tiny_bundle(tmp / "bundle")
    rows = []
    k = 0
    while len(rows) < n + 1:
        if k == 0:
            m, model = None, bundle.wav2vec2
        else:
            shape = dataclasses.replace(random_shape(rng), hidden=32, layers=2, heads=rng.choice([1, 2, 4]),
                                        ffn=rng.choice([64, 128]), pos_groups=rng.choice([2, 4, 8, 16]))
            m = Member(shape, rng.randrange(10**6), rng.choice(["golden", "hf"]))
            model = build(m, tmp / f"live{k}")
        k += 1
        fam = fb.family_of(model, "hf" if m is None else m.init)
        if m is not None and family is not None and fam != family:
            continue
        gen = tiny_generator(dataclasses.replace(bundle, wav2vec2=model))
        cos, windows = asyncio.run(live_alignment_cosines(gen, model, speech))
        rows.append({"model": "tiny bundle's own" if m is None else m.label, "family": fam,
                     "speech_windows": windows, "mean": _r(cos.mean()), "p5": _r(cos.quantile(0.05))})
        print(f"live [{len(rows)}/{n + 1}] {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def _emit(result: dict, out: str | None) -> None:
    text = json.dumps(result, indent=1)
    if out:
        Path(out).write_text(text)
    print(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=2, help="seeds per grid shape and initialisation")
    ap.add_argument("--random", type=int, default=100, help="random shapes (seeds and inits random too)")
    ap.add_argument("--rng", type=int, default=14, help="seed of the random shapes")
    ap.add_argument("--quick", action="store_true", help="6 grid shapes instead of 13")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument("--live", type=int, default=0, help="only: live-paced alignment over this many random models")
    ap.add_argument("--live-family", default=None, help="with --live: only models of this family (e.g. golden-near)")
    ap.add_argument("--closeness-only", type=int, default=0,
                    help="only: the default closeness (mean, p5) of this many random models (~1 s each)")
    ap.add_argument("--reanalyse", nargs="+", default=None,
                    help="JSON files this script wrote: their models together, judged against today's bounds")
    ap.add_argument("--markdown", action="store_true", help="with --reanalyse: the docs' tables instead of JSON")
    args = ap.parse_args()
    if args.reanalyse:
        runs = [json.loads(Path(f).read_text()) for f in args.reanalyse]
        full = [run for run in runs if "models" in run]
        merged = summarise({**full[0], "models": [m for run in full for m in run["models"]],
                            "closeness_models": [m for run in runs for m in run.get("closeness_models", [])]})
        print(markdown(merged) if args.markdown else json.dumps(merged, indent=1))
        return
    torch.set_num_threads(1)  # streaming runs many small ops: one thread is steady on a shared CPU
    warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
    t0 = time.perf_counter()
    clips = [read_wav_16k(_audio_dir() / f"{n}.wav") for n in SPEECH]
    if args.closeness_only:
        rng = random.Random(args.rng)
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for k in range(args.closeness_only):
                m = Member(random_shape(rng), rng.randrange(10**6), rng.choice(["golden", "hf"]))
                model = build(m, Path(tmp) / str(k))
                mean, p5 = mean_p5(live_cosines(model, clips, FeatureSettings()))
                rows.append({"label": m.label, "family": fb.family_of(model, m.init), "default_mean": _r(mean),
                             "default_p5": _r(p5)})
                print(f"[{k + 1}/{args.closeness_only}] {rows[-1]}", file=sys.stderr, flush=True)
        _emit({"closeness_models": rows, "bench_seconds": round(time.perf_counter() - t0, 1)}, args.out)
        return
    if args.live:
        with tempfile.TemporaryDirectory() as tmp:
            rows = live_rows(args.live, random.Random(args.rng), clips[0][: 3 * SAMPLE_RATE], Path(tmp), args.live_family)
        _emit({"live_alignment": rows, "bench_seconds": round(time.perf_counter() - t0, 1)}, args.out)
        return
    result: dict = {"speech": list(SPEECH), "settings": FeatureSettings().__dict__, "models": []}

    golden = load_wav2vec2(_golden_dir() / "wav2vec2_tiny")
    again = golden_init_(Wav2Vec2Model(golden.config), 1241)
    result["golden_file_is_golden_init_seed_1241"] = all(
        torch.equal(a, b) for a, b in zip(again.state_dict().values(), golden.state_dict().values(), strict=True))
    result["golden_file"] = {"label": "golden file", "family": fb.family_of(golden, "golden"), **measure(golden, clips)}

    members = list(SUITE.values()) + EXTRA  # the test's own models, earlier worst cases, the grid, random ones
    members += [Member(shape, 100 * i + s, init) for init in ("golden", "hf")
                for i, shape in enumerate(QUICK_SHAPES if args.quick else SHAPES) for s in range(args.seeds)]
    rng = random.Random(args.rng)
    members += [Member(random_shape(rng), rng.randrange(10**6), rng.choice(["golden", "hf"]))
                for _ in range(args.random)]
    with tempfile.TemporaryDirectory() as tmp:
        for k, m in enumerate(members):
            model = build(m, Path(tmp) / str(k))
            row = {"label": m.label, "init": m.init, "seed": m.seed, "shape": m.shape.label,
                   "family": fb.family_of(model, m.init),
                   "set": "suite" if k < len(SUITE) else "extra" if k < len(SUITE) + len(EXTRA)
                   else "grid" if k < len(members) - args.random else "random",
                   **measure(model, clips)}
            result["models"].append(row)
            print(f"[{k + 1}/{len(members)}] {m.label}: {row['default_mean']} / {row['default_p5']}",
                  file=sys.stderr, flush=True)
    result["bench_seconds"] = round(time.perf_counter() - t0, 1)
    _emit(summarise(result), args.out)


if __name__ == "__main__":
    main()
