"""Live (incremental) wav2vec2 features vs the whole-clip path: cost and closeness.

    PYTHONPATH=. python bench/speech_features.py [--files speech_en1] [--device cpu] [--dtype float32]
        [--wav2vec2 FOLDER]   (real weights, e.g. chinese-wav2vec2-base, instead of the random base model)

Base-size architecture (12 layers x 768, the group-norm conv stack of chinese-wav2vec2-base) with
RANDOM weights: the cosine figures show how the windowing and the running statistics behave, not
what the trained model will do (trained attention is more local than random attention, so expect
them to be pessimistic for the encoder window; measure with real weights on a GPU machine).
The golden tiny model's figures are printed too. Speech: ../shared/audio (or $INFINITETALK_TEST_AUDIO).
Clips are cut to whole video frames (640 samples) where the reference's interpolation is exactly
the live token grid; "unaligned" shows the effect of the reference's stretch at other lengths.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import wave
from pathlib import Path

import numpy as np
import torch
from transformers import Wav2Vec2Config, Wav2Vec2Model

from model.audio import load_wav2vec2, whole_clip_embedding
from model.timebase import SAMPLE_RATE
from streaming.features import (
    FeatureSettings,
    IncrementalConvStack,
    IncrementalFeatureExtractor,
    whole_clip_norm_stats,
)

REPO = Path(__file__).resolve().parents[1]

HUGE = 1_000_000


def _audio_dir() -> Path:
    env = os.environ.get("INFINITETALK_TEST_AUDIO")
    return Path(env) if env else REPO.parent / "shared" / "audio"


def _golden_dir() -> Path:
    env = os.environ.get("INFINITETALK_GOLDEN")
    return Path(env) if env else REPO.parent / "shared" / "golden"


def _read(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        if w.getframerate() != SAMPLE_RATE or w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise SystemExit(f"{path}: expected 16 kHz mono PCM16")
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768.0


def _aligned(x: np.ndarray) -> np.ndarray:
    return x[: x.shape[0] // 640 * 640]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _live(model, x, settings, fixed=None, piece=1600) -> torch.Tensor:
    ex = IncrementalFeatureExtractor(model, settings, fixed_stats=fixed)
    out = [ex.push(x[i:i + piece]) for i in range(0, x.shape[0], piece)]
    return torch.cat([*out, ex.flush()])


def _frame_rms(x: np.ndarray) -> np.ndarray:
    """RMS of each video frame's 640 samples: [S]."""
    return np.sqrt((x.reshape(-1, 640).astype(np.float64) ** 2).mean(axis=1))


def _figures(cos: list[torch.Tensor]) -> dict[str, float]:
    c = torch.cat(cos)
    if c.numel() == 0:
        return {}
    return {"mean": round(float(c.mean()), 4), "p5": round(float(c.quantile(0.05)), 4),
            "min": round(float(c.min()), 4)}


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.float().flatten(1), b.float().flatten(1), dim=-1).cpu()


def closeness(model, clips: dict[str, np.ndarray], lookaheads, contexts, default: FeatureSettings) -> dict:
    """Per-frame cosine (all layers as one vector) of live vs whole-clip embeddings, pooled over clips.

    Look-ahead and left-context sweeps change one setting from the default. "statistics_only" runs
    the encoder as one block over the whole clip, so only the running normalisation differs.
    """
    refs = {k: whole_clip_embedding(model, _aligned(x)) for k, x in clips.items()}

    def cosines(settings: FeatureSettings, fixed: bool = False) -> list[torch.Tensor]:
        cos = []
        for k, x in clips.items():
            x = _aligned(x)
            stats = whole_clip_norm_stats(model, x) if fixed else None
            cos.append(_cos(_live(model, x, settings, stats), refs[k]))
        return cos

    def sweep(settings: FeatureSettings, fixed: bool = False) -> dict[str, float]:
        return _figures(cosines(settings, fixed))

    def replace(**kw) -> FeatureSettings:
        return FeatureSettings(**{**default.__dict__, **kw})

    out: dict = {"default_settings": default.__dict__}
    out["vs_lookahead_frames"] = {}
    for la in lookaheads:
        cos = cosines(replace(lookahead_frames=la))
        out["vs_lookahead_frames"][la] = _figures(cos)
        if la == default.lookahead_frames:  # where the misses are: frames with sound vs near-silent frames
            loud = [torch.from_numpy(_frame_rms(_aligned(x)) > 0.01) for x in clips.values()]
            out["default_by_frame_rms"] = {
                "rms_above_0.01": _figures([c[m] for c, m in zip(cos, loud, strict=True)]),
                "rms_below_0.01": _figures([c[~m] for c, m in zip(cos, loud, strict=True)]),
                "share_below_0.01": round(float(torch.cat(loud).logical_not().float().mean()), 3)}
    out["vs_left_context_frames"] = {c: sweep(replace(left_context_frames=c)) for c in contexts}
    other = "recompute" if default.encoder == "cached" else "cached"
    out[f"encoder_{other}"] = sweep(replace(encoder=other))
    # one block = the whole-clip encoder: statistics alone (with the default's warm-up for speech from the start)
    full = {"block_frames": HUGE, "lookahead_frames": 0,
            "stats_warmup_frames": default.block_frames + default.lookahead_frames}
    out["statistics_only"] = {
        "whole_clip_stats": sweep(replace(**full), fixed=True),
        "running_default": sweep(replace(**full)),
        "no_warmup": sweep(replace(**{**full, "stats_warmup_frames": 1})),
        "horizon_3s": sweep(replace(**full, stats_horizon_s=3.0)),
        "no_sound_gate": sweep(replace(**full, quiet_rms=0.0)),
        "no_loudness": sweep(replace(**full, loudness=False)),
    }
    unaligned = [_cos(_live(model, x, default), whole_clip_embedding(model, x)) for x in clips.values()]
    out["unaligned_lengths_default"] = _figures(unaligned)
    x = next(iter(clips.values()))
    with_gain, without = whole_clip_embedding(model, x), whole_clip_embedding(model, x, loudness=False)
    out["whole_clip_loudness_on_vs_off_max_rel_diff"] = float((with_gain - without).abs().max() / without.abs().max())
    return out


def _clock(device: torch.device) -> float:
    """CPU seconds of this process on CPU (robust on a shared machine), wall seconds on GPUs."""
    return time.perf_counter() if device.type == "cuda" else time.process_time()


def _live_cost(model, x: np.ndarray, settings: FeatureSettings, device: torch.device) -> tuple[float, list[float]]:
    ex = IncrementalFeatureExtractor(model, settings)
    pushes = []
    t0 = _clock(device)
    for i in range(0, x.shape[0], 320):
        t = _clock(device)
        ex.push(x[i:i + 320])
        _sync(device)
        pushes.append(1000 * (_clock(device) - t))
    ex.flush()
    _sync(device)
    return _clock(device) - t0, pushes


def cost(model, x: np.ndarray, settings: FeatureSettings, device: torch.device, repeats: int = 2) -> dict:
    """Milliseconds of compute per second of audio: whole clip vs live (20 ms pushes)."""
    seconds = x.shape[0] / SAMPLE_RATE
    whole_clip_embedding(model, x)  # warm-up
    whole, conv = [], []
    for _ in range(repeats):
        t = _clock(device)
        whole_clip_embedding(model, x)
        _sync(device)
        whole.append(_clock(device) - t)
        stack = IncrementalConvStack(model)
        t = _clock(device)
        for i in range(0, x.shape[0], 320):
            stack.push(x[i:i + 320])
        _sync(device)
        conv.append(_clock(device) - t)
    live = [_live_cost(model, x, settings, device)]
    best, pushes = min(live, key=lambda r: r[0])
    other = "recompute" if settings.encoder == "cached" else "cached"
    other_s, _ = _live_cost(model, x, FeatureSettings(**{**settings.__dict__, "encoder": other}), device)
    s = settings
    return {
        "clock": "wall" if device.type == "cuda" else "process CPU time",
        "audio_s": round(seconds, 2),
        "whole_clip_ms_per_audio_s": round(1000 * min(whole) / seconds, 1),
        "live_ms_per_audio_s": round(1000 * best / seconds, 1),
        f"live_{other}_encoder_ms_per_audio_s": round(1000 * other_s / seconds, 1),
        "live_conv_stack_only_ms_per_audio_s": round(1000 * min(conv) / seconds, 1),
        "encoder_runs_per_audio_s": 25 / s.block_frames,
        "encoder_query_tokens_per_audio_s": {
            "whole_clip": 25, "cached": 25 * (s.block_frames + s.lookahead_frames) / s.block_frames,
            "recompute": 25 * (s.left_context_frames + s.block_frames + s.lookahead_frames) / s.block_frames},
        "per_20ms_push_ms": {"median": round(statistics.median(pushes), 2),
                             "p95": round(float(np.percentile(pushes, 95)), 2), "max": round(max(pushes), 2)},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", nargs="+", default=["speech_en1"], help="speech files (stem) for the base model")
    ap.add_argument("--seconds", type=float, default=4.0,
                    help="first seconds (+333 samples, so not whole frames) of each base-model file; 0: all")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: steady on shared CPUs)")
    ap.add_argument("--tiny-files", nargs="+", default=["speech_en1", "speech_en2", "speech_de1",
                                                        "dialogue_with_pause"])
    ap.add_argument("--lookahead", type=int, nargs="+", default=[0, 2, 4, 8, 16])
    ap.add_argument("--context", type=int, nargs="+", default=[12, 25, 100])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    ap.add_argument("--skip-base", action="store_true")
    ap.add_argument("--wav2vec2", default=None, help="HF wav2vec2 folder with real weights for the base-size run")
    args = ap.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.set_num_threads(args.threads)
    default = FeatureSettings()
    contexts = sorted({*args.context, default.left_context_frames})
    result: dict = {"device": str(device), "dtype": args.dtype, "threads": torch.get_num_threads()}
    t_start = time.perf_counter()

    tiny = load_wav2vec2(_golden_dir() / "wav2vec2_tiny").to(device, dtype)
    tiny_clips = {f: _read(_audio_dir() / f"{f}.wav") for f in args.tiny_files}
    result["tiny_golden"] = {"files": args.tiny_files,
                             **closeness(tiny, tiny_clips, args.lookahead, contexts, default)}
    result["tiny_seconds"] = round(time.perf_counter() - t_start, 1)
    if not args.skip_base:
        torch.manual_seed(0)
        if args.wav2vec2:
            base = load_wav2vec2(args.wav2vec2, device=device, dtype=dtype)
        else:
            base = Wav2Vec2Model(Wav2Vec2Config(attn_implementation="sdpa")).to(device, dtype).eval()
        n = int(args.seconds * SAMPLE_RATE) + 333 if args.seconds else None
        clips = {f: _read(_audio_dir() / f"{f}.wav")[:n] for f in args.files}
        result["base_real_weights" if args.wav2vec2 else "base_random_weights"] = {
            "note": f"weights from {args.wav2vec2}" if args.wav2vec2 else
            "wav2vec2-base architecture (12 x 768, group-norm conv stack) with RANDOM weights",
            "files": args.files,
            "cost": cost(base, _aligned(next(iter(clips.values()))), default, device),
            "cost_seconds": round(time.perf_counter() - t_start, 1),
            **closeness(base, clips, args.lookahead, contexts, default),
        }
    result["bench_seconds"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
