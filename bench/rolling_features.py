"""Rolling (FlashTalk) vs incremental speech features: closeness to the whole clip, cost, latency.

    PYTHONPATH=. python bench/rolling_features.py [--files speech_en1 speech_de1] [--seconds 8]
        [--wav2vec2 FOLDER]   (real weights instead of the random base-size model)

Windows as the flashtalk preset makes them (33 frames, 28 new). For every new frame of every whole
window: cosine (all layers as one vector) between the features the window gets and the whole clip's.
"rolling" re-encodes the last `--buffer` seconds per window (FlashTalk's streaming path, no look-ahead);
"incremental" is the live extractor with its default look-ahead. Cost: process CPU seconds of feature
work per second of audio. Models: the golden tiny wav2vec2 and the base-size architecture (random
weights unless --wav2vec2). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import wave
from pathlib import Path

import numpy as np
import torch
from transformers import Wav2Vec2Config, Wav2Vec2Model

from model.audio import load_wav2vec2, whole_clip_embedding
from model.timebase import SAMPLE_RATE
from streaming.features import FeatureSettings, IncrementalFeatureExtractor
from streaming.features.rolling import RollingClipFeatures

REPO = Path(__file__).resolve().parents[1]

FRAMES, NEW, SPF = 33, 28, 640


def _read(stem: str) -> np.ndarray:
    root = Path(os.environ.get("INFINITETALK_TEST_AUDIO") or REPO.parent / "shared" / "audio")
    with wave.open(str(root / f"{stem}.wav")) as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768.0


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.float().flatten(1), b.float().flatten(1), dim=-1)


def _rolling(model, x: np.ndarray, buffer_s: float) -> tuple[torch.Tensor, float]:
    """Own-frame features of every new frame of each whole window, and the CPU seconds they took."""
    roll, rows = RollingClipFeatures(model, buffer_s), []
    t = time.process_time()
    for k in range(x.shape[0] // (NEW * SPF)):
        roll.push(x[k * NEW * SPF:(k + 1) * NEW * SPF])
        rows.append(roll.window(FRAMES)[-NEW:, 2])  # slot 2 of a frame's +-2 window is the frame itself
    return torch.cat(rows), time.process_time() - t


def _incremental(model, x: np.ndarray) -> tuple[torch.Tensor, float]:
    ex = IncrementalFeatureExtractor(model, FeatureSettings())
    t = time.process_time()
    out = [ex.push(x[i:i + 320]) for i in range(0, x.shape[0], 320)]
    emb = torch.cat([*out, ex.flush()])
    return emb, time.process_time() - t


def compare(model, clips: dict[str, np.ndarray], buffer_s: float) -> dict:
    cos: dict[str, list[torch.Tensor]] = {"rolling": [], "incremental": []}
    cpu = {"rolling": 0.0, "incremental": 0.0}
    audio_s = 0.0
    for x in clips.values():
        n = x.shape[0] // (NEW * SPF) * NEW
        x = x[: n * SPF]
        ref = whole_clip_embedding(model, x)
        rolled, t_roll = _rolling(model, x, buffer_s)
        live, t_live = _incremental(model, x)
        cos["rolling"].append(_cos(rolled, ref[:n]))
        cos["incremental"].append(_cos(live[:n], ref[:n]))
        cpu["rolling"] += t_roll
        cpu["incremental"] += t_live
        audio_s += x.shape[0] / SAMPLE_RATE
    out: dict = {"audio_s": round(audio_s, 2)}
    for k, c in cos.items():
        c = torch.cat(c)
        # Position in the window: the last new frames have no future context under "rolling".
        last2 = torch.cat([v.view(-1, NEW)[:, -2:].flatten() for v in cos[k]])
        out[k] = {"cosine_mean": round(float(c.mean()), 4), "cosine_p5": round(float(c.quantile(0.05)), 4),
                  "cosine_last_two_frames_mean": round(float(last2.mean()), 4),
                  "cpu_ms_per_audio_s": round(1000 * cpu[k] / audio_s, 1)}
    out["rolling_cost_vs_incremental"] = round(cpu["rolling"] / max(cpu["incremental"], 1e-9), 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", nargs="+", default=["speech_en1", "speech_de1"])
    ap.add_argument("--seconds", type=float, default=8.0, help="first seconds of each file (0: all)")
    ap.add_argument("--buffer", type=float, default=8.0, help="rolling buffer seconds (FlashTalk: 8)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--wav2vec2", default=None, help="HF wav2vec2 folder with real weights for the base-size run")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    clips = {f: _read(f)[: int(args.seconds * SAMPLE_RATE) or None] for f in args.files}
    golden = Path(os.environ.get("INFINITETALK_GOLDEN") or REPO.parent / "shared" / "golden")
    result: dict = {"window": {"frames": FRAMES, "new_frames": NEW}, "buffer_s": args.buffer,
                    "files": args.files, "threads": torch.get_num_threads(),
                    "latency_saved_s": round((FeatureSettings().max_delay_frames + 2) / 25, 2)}
    with torch.no_grad():
        result["tiny_golden"] = compare(load_wav2vec2(golden / "wav2vec2_tiny"), clips, args.buffer)
        torch.manual_seed(0)
        base = (load_wav2vec2(args.wav2vec2) if args.wav2vec2
                else Wav2Vec2Model(Wav2Vec2Config(attn_implementation="sdpa")).eval())
        key = "base_real_weights" if args.wav2vec2 else "base_random_weights"
        result[key] = compare(base, clips, args.buffer)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
