"""The bench for the SoulX-FlashHead presets: per-chunk stage split, real-time factor, batched sessions.

Shared by `infinitetalk-live bench --preset flashhead-pro` and `bench/flashhead.py`. A chunk is one
live window as the server makes it (`FlashHeadGenerator.generate`): the rolling 8 s of speech
re-encoded by wav2vec2, one DiT call per step, VAE decode of the chunk, colour match, VAE encode of
the last frames as the next motion latents. It yields `new_frames` frames (28 on Pro: 1.12 s of
video), so real time needs chunk seconds <= that; the first chunk (warm-up) is reported apart.

Models: `tiny` loads `--weights` through the real loaders, or, without weights, a tiny random Pro
release written to a temporary folder (`model.flashhead.tiny`); `1.3b` builds the released sizes
(Wan2.1-1.3B DiT 30 x 1536, the Wan2.1 VAE, wav2vec2-base 12 x 768) with random weights directly
on the device (no checkpoint). Lite is "not available" until its LTX-Video VAE is ported.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import Wav2Vec2Config, Wav2Vec2Model

from model.dit.flashhead import FlashHeadDiT
from model.families import ModelOptions
from model.families.registry import build_model
from model.flashhead.assemble import FlashHeadModel, chunk_settings
from model.flashhead.config import FlashHeadConfig
from model.flashhead.presets import SIZE
from model.flashhead.release import KIND_LABELS, LITE, PRO
from model.flashhead.tiny import write_tiny_flashhead
from model.flashhead.vae import WanChunkVAE
from model.infinitetalk.timing import StageTimes
from model.timebase import VIDEO_FPS
from model.vae import VAEConfig, WanVAE

from ..backends.infinitetalk.flashhead import FlashHeadGenerator
from ..generator import Avatar, WindowJob

PRO_1_3B = {"dim": 1536, "in_dim": 32, "ffn_dim": 8960, "out_dim": 16, "text_dim": 4096, "freq_dim": 256,
            "eps": 1e-6, "vae_stride": [4, 8, 8], "patch_size": [1, 2, 2], "num_heads": 12, "num_layers": 30,
            "has_image_input": False}
"""Wan2.1-1.3B's sizes as a Model_Pro config.json states them (the audio adapter takes the reference's defaults)."""

SECTIONS = ("stages", "sessions")
"""The bench sections that apply to FlashHead presets."""


class NotAvailable(ValueError):
    """The preset cannot be measured by this build (Lite before its VAE is ported)."""


def unavailable(preset: str) -> str | None:
    """Why `preset` cannot be benched at the 1.3B shape yet, or None. (The place to change when the
    LTX-Video VAE lands: build Lite in `real_model` and return None here.)"""
    if preset == LITE:
        return (f"{preset} at the 1.3B shape: the Lite DiT's released sizes for its LTX-Video VAE latents are "
                "not known to this server without a checkpoint (docs/flashhead.md); measure a Lite release with "
                "bench --preset flashhead-lite (tiny) or --weights DIR")
    return None


def real_model(preset: str | None, device: torch.device, dtype: torch.dtype, size: tuple[int, int] = SIZE,
               opts: ModelOptions | None = None, dit_config: dict | None = None, vae_config: VAEConfig | None = None,
               wav2vec2_config: dict | None = None) -> FlashHeadModel:
    """The released sizes (or the configs given: tests build the same way at tiny sizes) with seeded random
    weights, built on `device` without touching the disk (the DiT on the meta device, then filled there)."""
    preset = preset or PRO
    reason = unavailable(preset)
    if reason:
        raise NotAvailable(reason)
    cfg = FlashHeadConfig.from_kwargs(dit_config or PRO_1_3B)
    with torch.device("meta"):
        dit = FlashHeadDiT(cfg.dit)
    dit = dit.to(dtype).to_empty(device=device).init_random_weights_(seed=0).eval().requires_grad_(False)
    torch.manual_seed(0)
    with torch.device(device):
        vae = WanVAE(vae_config or VAEConfig.wan21()).eval().requires_grad_(False)
        wav2vec2 = Wav2Vec2Model(Wav2Vec2Config(**(wav2vec2_config or {}))).eval().requires_grad_(False)
    chunk = chunk_settings(opts or ModelOptions(), preset)
    return FlashHeadModel(dit, WanChunkVAE(vae), wav2vec2, cfg, chunk, size, preset,
                          f"{KIND_LABELS[preset]} shape, RANDOM WEIGHTS (video is noise)")


def loaded_model(opts: ModelOptions) -> FlashHeadModel:
    """`opts.weights` through the real detection and loaders; without weights, a tiny random release of the
    preset's kind (Pro or Lite) written to a temporary folder first."""
    if opts.weights is None:
        root = Path(tempfile.mkdtemp(prefix="flashhead-tiny-")) / "SoulX-FlashHead-1_3B"
        opts = dataclasses.replace(opts, weights=write_tiny_flashhead(root, kind=opts.preset or PRO))
    model = build_model(opts)
    if not isinstance(model, FlashHeadModel):
        raise ValueError(f"{opts.weights} is not a SoulX-FlashHead release")
    return model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _avatar(model: FlashHeadModel, rng: np.random.Generator, name: str) -> Avatar:
    h, w = model.size
    return Avatar(name, rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8))


def _speech(gen: FlashHeadGenerator, rng: np.random.Generator) -> np.ndarray:
    return (0.1 * rng.standard_normal((1, gen.window.job_samples))).astype(np.float32)


def chunk_stages(model: FlashHeadModel, chunks: int, seed: int = 0) -> dict[str, Any]:
    """One session's chunks, one at a time: seconds per chunk, real-time factor, split by stage."""
    gen = FlashHeadGenerator(model, seed=seed)
    device = model.dit.device
    rng = np.random.default_rng(seed)
    state = gen.open_session("bench", _avatar(model, rng, "bench"))

    def one(index: int) -> float:
        job = WindowJob("bench", index, index * gen.window.new_frames, _speech(gen, rng), True)
        _sync(device)
        t0 = time.perf_counter()
        frames = sum(1 for _ in gen.generate(state, job))
        _sync(device)
        if frames != gen.window.new_frames:
            raise RuntimeError(f"a chunk made {frames} frames, not {gen.window.new_frames}")
        return time.perf_counter() - t0

    with torch.inference_mode():
        warm_s = one(0)
        state.chunker.times = StageTimes(device)
        chunk_s = [one(k + 1) for k in range(chunks)]
        stages = state.chunker.times.as_dict()
    video_s = gen.window.new_frames / VIDEO_FPS
    median = statistics.median(chunk_s)
    per_chunk = {k: round(v["seconds"] / chunks, 4) for k, v in stages.items()}
    per_chunk["dit_per_step"] = round(stages["dit_step"]["seconds"] / stages["dit_step"]["calls"], 4)
    return {
        "new_frames": gen.window.new_frames, "video_s_per_chunk": video_s, "chunks": chunks,
        "first_chunk_s": round(warm_s, 3), "chunk_s_median": round(median, 4), "chunk_s_min": round(min(chunk_s), 4),
        "realtime_factor": round(video_s / median, 3),
        "sessions_at_25fps_without_batching": int(video_s / median),
        "stages_s_per_chunk": per_chunk,
    }


def batched_pass(model: FlashHeadModel, sessions: int, chunks: int, seed: int = 0) -> dict[str, Any]:
    """`sessions` streams' chunks made in one batched pass each time (the engine's cross-session batching:
    one DiT call per step for all, decode and colour per session)."""
    gen = FlashHeadGenerator(model, seed=seed, max_batch=sessions)
    device = model.dit.device
    rng = np.random.default_rng(seed)
    states = [gen.open_session(f"s{i}", _avatar(model, rng, f"s{i}")) for i in range(sessions)]

    def one(index: int) -> float:
        jobs = [WindowJob(f"s{i}", index, index * gen.window.new_frames, _speech(gen, rng), True)
                for i in range(sessions)]
        _sync(device)
        t0 = time.perf_counter()
        works = [gen.prepare_window(st, job) for st, job in zip(states, jobs, strict=True)]
        frames = sum(1 for _ in gen.generate_batch(works))
        _sync(device)
        if frames != sessions * gen.window.new_frames:
            raise RuntimeError(f"a pass of {sessions} sessions made {frames} frames")
        return time.perf_counter() - t0

    with torch.inference_mode():
        one(0)
        median = statistics.median(one(k + 1) for k in range(chunks))
    video_s = gen.window.new_frames / VIDEO_FPS
    return {"sessions": sessions, "pass_s_median": round(median, 4),
            "realtime_factor_per_session": round(video_s / median, 3),
            "all_sessions_realtime": median <= video_s}


def sessions_at_25fps(single: dict[str, Any], batched: list[dict[str, Any]]) -> int:
    """Most sessions measured to keep up at 25 fps: one at a time (the whole part of the real-time factor)
    or the largest batched pass that fits in the video it makes."""
    fitting = [b["sessions"] for b in batched if b["all_sessions_realtime"]]
    return max([single["sessions_at_25fps_without_batching"], *fitting])


def describe(model: FlashHeadModel, shape: str) -> dict[str, Any]:
    c = model.chunk
    return {"shape": shape, "preset": model.preset, "model": model.description, "device": str(model.dit.device),
            "dit_dtype": str(model.dit.dtype).removeprefix("torch."), "size": list(model.size),
            "frames_per_chunk": c.frame_num, "motion_frames": model.motion_frames, "new_frames": model.new_frames,
            "steps": c.sampler.steps, "colour_strength": c.colour_strength,
            "rolling_audio_s": model.rolling_seconds, "fps": VIDEO_FPS}


def run(model: FlashHeadModel, shape: str, chunks: int, session_counts: tuple[int, ...],
        sections: tuple[str, ...] = SECTIONS, seed: int = 0) -> dict[str, Any]:
    """The report of the chosen sections (`stages`: one session's chunks; `sessions`: batched passes
    of each count above one), as JSON-ready values."""
    report: dict[str, Any] = {"settings": describe(model, shape)}
    single = chunk_stages(model, chunks, seed) if "stages" in sections or "sessions" in sections else None
    if "stages" in sections:
        report["stages"] = single
    if "sessions" in sections and single is not None:
        batched = [batched_pass(model, n, chunks, seed) for n in session_counts if n > 1]
        report["sessions"] = {"batched": batched, "sessions_at_25fps": sessions_at_25fps(single, batched),
                              "sessions_at_25fps_without_batching": single["sessions_at_25fps_without_batching"]}
    return report
