"""Benchmark: ms per frame and fps of the lite backend at 512x512 on ONE thread, speech vs idle.

Prints one JSON object. Threads are pinned to 1 (cv2, and torch if installed; numpy's FFT is
single-threaded) so the figure is what one core of a server gives one session. The first frame
of each window also carries that window's audio analysis; `first_in_window` and `others` split
the cost. Runs in about 10 s.

    python bench/lite_fps.py [--seconds 6] [--size 512]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import wave
from pathlib import Path

import cv2
import numpy as np

from model.timebase import SAMPLE_RATE
from streaming.avatars import default_avatar
from streaming.backends.lite import LiteGenerator, LiteSettings
from streaming.generator import WindowJob

REPO = Path(__file__).resolve().parents[1]


def _speech(seconds: float) -> tuple[np.ndarray, str]:
    """Real test speech if the shared folder is there, else speech-like noise bursts (stated in the output)."""
    for d in (os.environ.get("INFINITETALK_TEST_AUDIO"), REPO.parent / "shared" / "audio", "/work/shared/audio"):
        p = Path(d or "") / "speech_en1.wav"
        if d and p.is_file():
            with wave.open(str(p)) as w:
                x = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
            return np.resize(x, int(seconds * SAMPLE_RATE)), str(p)
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.2 * rng.standard_normal(len(t)) * (np.sin(2 * np.pi * 4 * t) > 0)).astype(np.float32), "synthetic"


def _run(gen: LiteGenerator, audio: np.ndarray, speech: bool, session: str) -> dict:
    st = gen.open_session(session, default_avatar())
    spec = gen.window
    padded = np.concatenate([audio, np.zeros(spec.job_samples, np.float32)])
    times = []
    for w in range(len(audio) // spec.window_samples):
        a = padded[w * spec.window_samples: w * spec.window_samples + spec.job_samples][None]
        it = gen.generate(st, WindowJob(session, w, w * spec.new_frames, a, speech))
        while True:
            t0 = time.perf_counter()
            try:
                next(it)
            except StopIteration:
                break
            times.append(time.perf_counter() - t0)
    gen.close_session(st)
    n = spec.new_frames
    skip = 3 * n  # warm-up windows
    ms = np.array(times[skip:]) * 1000.0
    first = ms[np.arange(len(ms)) % n == 0]
    return {**_stats(ms), "first_in_window_ms": round(float(first.mean()), 3),
            "others_ms": round(float(ms[np.arange(len(ms)) % n != 0].mean()), 3)}


def _stats(ms: np.ndarray) -> dict:
    return {"frames": len(ms), "ms_per_frame": round(float(ms.mean()), 3), "fps": round(1000.0 / float(ms.mean()), 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "max_ms": round(float(ms.max()), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=6.0, help="audio per case")
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    gen = LiteGenerator(LiteSettings(width=args.size, height=args.size))
    speech, source = _speech(args.seconds)
    t0 = time.perf_counter()
    gen.open_session("warm", default_avatar())
    open_ms = (time.perf_counter() - t0) * 1000.0
    result = {
        "backend": gen.name,
        "size": f"{args.size}x{args.size}",
        "threads": 1,
        "window_frames": gen.window.new_frames,
        "audio": source,
        "open_session_ms": round(open_ms, 1),
        "speech": _run(gen, speech, True, "bench-speech"),
        "idle": _run(gen, np.zeros_like(speech), False, "bench-idle"),
        "cpu": platform.processor() or platform.machine(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
