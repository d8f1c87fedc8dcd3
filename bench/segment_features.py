"""Benchmark: generated speech with whole-segment features vs the live approximation, in one run.

The infinitetalk backend at a tiny random size (written to a temporary folder and loaded through the
real loaders, as the tests do) on the engine in this process. Per trial, one utterance in each of
three modes, alternating: `generated` (the whole utterance at once with `input: "generated"` and a
segment end; features over the whole segment, docs/live_features.md), `generated_live_features` (the
same, with `segment_clip_s=0`: the incremental features) and `live` (20 ms chunks in real time, a
microphone). Measured: seconds from the first audio push to the first frame carrying the utterance,
and, for every row entry a speech window used inside the utterance, its difference from the reference
whole-clip features of the utterance (max abs, mean and min cosine). `--base-pass` adds the cost of
one whole-clip pass of a wav2vec2-base-sized model (random weights, this machine's CPU, one thread)
over the utterance and over 30 s, the longest clip (`segment_clip_s`). Printed as one JSON object.

    PYTHONPATH=. python bench/segment_features.py [--trials 3] [--seconds 3] [--base-pass] [--speech WAV]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import torch
from transformers import Wav2Vec2Config, Wav2Vec2Model

from model.audio import whole_clip_embedding
from model.infinitetalk import ModelFiles, WindowSettings, load_bundle
from model.infinitetalk.tiny import write_tiny_weights
from model.sampling import GuidanceScales
from model.timebase import SAMPLE_RATE, SAMPLES_PER_FRAME
from streaming.backends.infinitetalk.generator import InfiniteTalkBackendSettings, InfiniteTalkGenerator
from streaming.engine import Engine
from streaming.features import FeatureSettings
from streaming.generator import Avatar
from streaming.session import SessionSettings

SPEECH = Path(__file__).resolve().parents[2] / "shared" / "audio" / "speech_en1.wav"
WINDOW = WindowSettings(frame_num=17, motion_frames=5, steps=2, shift=5.0, guidance=GuidanceScales(1.0, 2.0))
FEATURES = FeatureSettings(left_context_frames=25, lookahead_frames=4, block_frames=4)
AVATAR = Avatar("face", np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), np.uint8))


class RowRecorder(InfiniteTalkGenerator):
    """The real backend, keeping each window's job and the rows it used."""

    used: list

    def _window_rows(self, state, job):
        rows = super()._window_rows(state, job)
        self.used.append((job, rows.clone()))
        return rows


def read_speech(seconds: float, path: Path = SPEECH) -> np.ndarray:
    with wave.open(str(path)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768.0
    start = int(np.flatnonzero(np.abs(pcm) > 0.01)[0])
    return pcm[start:start + int(seconds * SAMPLE_RATE)].copy()


async def one_utterance(gen: RowRecorder, speech: np.ndarray, generated: bool) -> tuple[float, int]:
    """First-frame seconds; returns also where the utterance starts on the session timeline."""
    gen.used = []
    engine = Engine(gen)
    loop = asyncio.get_running_loop()
    try:
        session = await engine.open_session(AVATAR, SessionSettings(generated_speech=generated, max_buffer_s=60))
        frames = session.frames()
        for _ in range(15):  # settle into idle windows first
            await anext(frames)
        t0 = loop.time()
        if generated:
            session.push_audio(speech)
            session.end_segment()
            feeder = None
        else:
            async def feed() -> None:
                for i in range(0, speech.size, 320):
                    await asyncio.sleep(max(0.0, t0 + i / SAMPLE_RATE - loop.time()))
                    session.push_audio(speech[i:i + 320])
            feeder = asyncio.create_task(feed())
        count = 0
        async for frame in frames:
            count += 1
            if frame.input_pos > 0:
                first = loop.time() - t0
                break
        else:
            raise RuntimeError("no frame carried the utterance")
        while frame.input_pos < speech.size:  # let every window of the utterance run
            frame = await anext(frames)
        if feeder is not None:
            await feeder
        await session.close()
    finally:
        await engine.shutdown()
    return first, _start_of(gen, speech)


def _start_of(gen: RowRecorder, speech: np.ndarray) -> int:
    ctx = gen.window.context_frames * SAMPLES_PER_FRAME
    for job, _ in gen.used:
        window = job.audio[0, ctx:ctx + gen.window.window_samples]
        hits = np.flatnonzero(window == speech[0])
        for off in hits:
            if np.array_equal(window[off:off + 64], speech[:64]):
                return job.first_frame * SAMPLES_PER_FRAME + int(off)
    raise RuntimeError("the utterance was not found in any window")


def difference(gen: RowRecorder, start: int, ref: torch.Tensor) -> dict:
    """Every row entry of a speech window inside the utterance vs the whole-clip row."""
    m = gen.settings.window.motion_frames
    used, want = [], []
    for job, rows in gen.used:
        if not job.speech:
            continue
        for j in range(rows.shape[1]):
            for d in range(rows.shape[2]):
                f = job.first_frame - m + j + d - 2
                k = (f * SAMPLES_PER_FRAME - start + SAMPLES_PER_FRAME // 2) // SAMPLES_PER_FRAME
                if 0 <= k < ref.shape[0]:
                    used.append(rows[0, j, d])
                    want.append(ref[k])
    a, b = torch.stack(used).flatten(1), torch.stack(want).flatten(1)
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1)
    return {"entries": len(used), "max_abs": float((a - b).abs().max()), "cosine_mean": round(float(cos.mean()), 6),
            "cosine_min": round(float(cos.min()), 6)}


def base_pass_ms(speech: np.ndarray) -> dict:
    """Median of 3 whole-clip passes of a wav2vec2-base-sized model over the utterance and over 30 s."""
    model = Wav2Vec2Model(Wav2Vec2Config()).eval()
    out = {}
    for name, clip in (("utterance", speech), ("30s", np.resize(speech, 30 * SAMPLE_RATE))):
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            whole_clip_embedding(model, clip)
            times.append(time.perf_counter() - t0)
        out[name] = round(statistics.median(times) * 1000, 1)
    return out


async def run(trials: int, seconds: float, base_pass: bool, speech_path: Path = SPEECH) -> dict:
    torch.set_num_threads(1)
    speech = read_speech(seconds, speech_path)
    with tempfile.TemporaryDirectory() as tmp:
        write_tiny_weights(Path(tmp))
        bundle = load_bundle(ModelFiles.discover(Path(tmp)), dtype=torch.float32)
    ref = whole_clip_embedding(bundle.wav2vec2, speech)
    modes = {"generated": (True, 30.0), "generated_live_features": (True, 0.0), "live": (False, 30.0)}
    gens = {name: RowRecorder(bundle, InfiniteTalkBackendSettings(window=WINDOW, size=(32, 32), features=FEATURES,
                                                                 seed=1, segment_clip_s=clip))
            for name, (_, clip) in modes.items()}
    firsts: dict[str, list[float]] = {name: [] for name in modes}
    diffs: dict[str, dict] = {}
    await one_utterance(gens["generated"], speech, True)  # warm-up
    for _ in range(trials):
        for name, (generated, _) in modes.items():
            first, start = await one_utterance(gens[name], speech, generated)
            firsts[name].append(first)
            diffs[name] = difference(gens[name], start, ref)
    med = {name: statistics.median(v) for name, v in firsts.items()}
    return {
        "bench": "segment_features",
        "what": "tiny random InfiniteTalk in process; first frame after the first audio push; features vs whole clip",
        "trials": trials,
        "utterance_s": seconds,
        "first_frame_ms": {name: [round(x * 1000, 1) for x in v] for name, v in firsts.items()},
        "first_frame_median_ms": {name: round(v * 1000, 1) for name, v in med.items()},
        "generated_over_generated_live_features": round(med["generated"] / med["generated_live_features"], 3),
        "generated_over_live": round(med["generated"] / med["live"], 3),
        "features_vs_whole_clip": diffs,
        **({"wav2vec2_base_whole_clip_ms": base_pass_ms(speech)} if base_pass else {}),
        "machine": platform.machine(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--base-pass", action="store_true", help="also time a wav2vec2-base-sized whole-clip pass")
    p.add_argument("--speech", type=Path, default=SPEECH, help="16 kHz mono PCM16 WAV of speech")
    args = p.parse_args()
    print(json.dumps(asyncio.run(run(args.trials, args.seconds, args.base_pass, args.speech)), indent=1))


if __name__ == "__main__":
    main()
