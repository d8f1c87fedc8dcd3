"""The bench's measurements, each on its own: stage split, engine offline and live, sessions, guidance calls.

Every function returns a plain dict (JSON-ready). Backend-level ones call the generator directly
(as the worker would); engine-level ones go through `Engine` and `Session` like the server does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import resource
import statistics
import time
from typing import Any

import cv2
import numpy as np
import torch

from model.infinitetalk import StageTimes, u8_to_unit
from model.sampling import GuidanceScales
from model.timebase import SAMPLE_RATE

from ..backends.infinitetalk.generator import InfiniteTalkGenerator
from ..engine import Engine
from ..generator import Avatar, WindowJob
from ..planner import PlannerSettings
from ..quality import QualitySettings
from ..session import SessionSettings


def _r(x: float, nd: int = 4) -> float:
    return round(float(x), nd)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict[str, Any]:
    """CUDA: max_memory_allocated since the last reset. CPU: the process's peak resident set."""
    if device.type == "cuda":
        return {"kind": "cuda_max_memory_allocated", "mb": round(torch.cuda.max_memory_allocated(device) / 2**20)}
    return {"kind": "cpu_peak_rss", "mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def _jobs(gen: InfiniteTalkGenerator, speech: np.ndarray, count: int, extras: dict) -> list[WindowJob]:
    """Consecutive window jobs over `speech` (looped), shaped as a session would make them."""
    spec = gen.window
    spf = spec.samples_per_frame
    need = (count * spec.new_frames + spec.lookahead_frames) * spf
    audio = np.resize(speech, need).astype(np.float32)
    jobs = []
    for k in range(count):
        a = k * spec.new_frames * spf
        chunk = audio[a : a + spec.job_samples][None]
        jobs.append(WindowJob("bench", k, k * spec.new_frames, chunk, True, dict(extras)))
    return jobs


def stage_split(gen: InfiniteTalkGenerator, avatar: Avatar, speech: np.ndarray, windows: int,
                extras: dict | None = None) -> dict[str, Any]:
    """Seconds per window by stage (means), after one warm-up window (which also conditions on the avatar).
    compute_s_per_window is the median window (steadier on a busy machine), also given as a mean."""
    pipe = gen.bundle.pipe
    device = pipe.device
    state = gen.open_session("bench", avatar)
    jobs = _jobs(gen, speech, windows + 1, extras or {})
    frames: list[np.ndarray] = []
    try:
        list(gen.generate(state, jobs[0]))
        times = StageTimes(device)
        pipe.times = times
        took = []
        for job in jobs[1:]:
            _sync(device)
            t0 = time.perf_counter()
            frames.extend(gen.generate(state, job))
            _sync(device)
            took.append(time.perf_counter() - t0)
    finally:
        pipe.times = None
        gen.close_session(state)
    total = sum(took)
    per_window = statistics.median(took)
    steps = extras.get("steps", gen.settings.window.steps) if extras else gen.settings.window.steps
    stages = {name: _r(sec / windows, 5) for name, sec in times.seconds.items()}
    dit_calls = times.calls.get("dit_step", 0)
    out = {
        "windows": windows,
        "steps": steps,
        "size": list(state.size),
        "window_s_of_video": _r(gen.window.window_seconds),
        "compute_s_per_window": _r(per_window),
        "compute_s_per_window_mean": _r(total / windows),
        "realtime_factor": _r(gen.window.window_seconds / per_window),
        "stages_s_per_window": stages,
        "dit_s_per_step": _r(times.seconds.get("dit_step", 0.0) / max(1, dit_calls), 5),
        "other_s_per_window": _r((total - sum(times.seconds.values())) / windows, 5),
    }
    out["video_encode_ms_per_frame"] = encode_costs(frames[: 2 * gen.window.new_frames])
    return out


def interleaved_windows(gen: InfiniteTalkGenerator, avatar: Avatar, speech: np.ndarray, windows: int,
                        levels: list[dict]) -> list[dict[str, Any]]:
    """Compute per window at several settings (job extras such as steps/size), one session each, their
    windows interleaved in time so that a busy machine slows every setting alike. Median per setting."""
    device = gen.bundle.pipe.device
    states = [gen.open_session(f"bench{k}", avatar) for k in range(len(levels))]
    jobs = [_jobs(gen, speech, windows + 1, extras) for extras in levels]
    took: list[list[float]] = [[] for _ in levels]
    try:
        for k, state in enumerate(states):
            list(gen.generate(state, jobs[k][0]))  # warm-up and conditioning
        for w in range(1, windows + 1):
            for k, state in enumerate(states):
                _sync(device)
                t0 = time.perf_counter()
                list(gen.generate(state, jobs[k][w]))
                _sync(device)
                took[k].append(time.perf_counter() - t0)
    finally:
        for state in states:
            gen.close_session(state)
    ws = gen.window.window_seconds
    return [{"compute_s_per_window": _r(statistics.median(t)), "realtime_factor": _r(ws / statistics.median(t))}
            for t in took]


def encode_costs(frames: list[np.ndarray]) -> dict[str, float]:
    """JPEG (OpenCV, quality 80, as the websocket sends) and H.264 (libx264 ultrafast, zerolatency)."""
    import av

    if not frames:
        return {}
    t0 = time.perf_counter()
    for f in frames:
        cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])
    jpeg = (time.perf_counter() - t0) / len(frames)
    h, w = frames[0].shape[:2]
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
    ctx.options = {"preset": "ultrafast", "tune": "zerolatency"}
    t0 = time.perf_counter()
    for f in frames:
        ctx.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f[: ctx.height, : ctx.width]), format="rgb24"))
    h264 = (time.perf_counter() - t0) / len(frames)
    return {"jpeg": _r(1000 * jpeg, 3), "h264": _r(1000 * h264, 3)}


# ------------------------------------------------------------------------------ through the engine
async def engine_offline(gen: InfiniteTalkGenerator, avatar: Avatar, speech: np.ndarray) -> dict[str, Any]:
    """All speech given at once, rendered as fast as possible: real-time factor and first-frame latency."""
    engine = Engine(gen)
    try:
        session = await engine.open_session(avatar, SessionSettings(planner=PlannerSettings(realtime=False),
                                                                    max_buffer_s=len(speech) / SAMPLE_RATE + 5))
        t0 = time.perf_counter()
        session.push_audio(speech)
        session.end_input()
        first = None
        n = 0
        async for _ in session.frames():
            first = first if first is not None else time.perf_counter() - t0
            n += 1
        wall = time.perf_counter() - t0
        await session.close()
    finally:
        await engine.shutdown()
    video_s = n / gen.window.fps
    return {"frames": n, "video_s": _r(video_s), "wall_s": _r(wall), "realtime_factor": _r(video_s / wall),
            "first_frame_latency_s": _r(first or 0.0)}


async def engine_live(gen: InfiniteTalkGenerator, avatar: Avatar, speech: np.ndarray,
                      quality: QualitySettings, max_wait_s: float, cut_idle: bool = True,
                      idle_lead_s: float = 0.0, silence_after_s: float = 0.0) -> dict[str, Any]:
    """Speech fed in 20 ms chunks by the wall clock, frames paced at the output rate, as a call runs.

    idle_lead_s: the avatar idles this long before the speech starts (where speech falls in the idle
    windows decides how much idle video is queued ahead of it).
    silence_after_s: keep sending silence after the speech, as an open microphone does.
    """
    engine = Engine(gen)
    frames = []
    try:
        session = await engine.open_session(avatar, SessionSettings(quality=quality, cut_idle=cut_idle,
                                                                    max_buffer_s=len(speech) / SAMPLE_RATE + 5))
        loop = asyncio.get_running_loop()

        async def consume() -> None:
            async for f in session.frames():
                frames.append(f)

        consumer = asyncio.create_task(consume())
        await asyncio.sleep(idle_lead_s)
        t0 = loop.time()
        first_push = time.monotonic()
        spoken = speech.size // gen.window.samples_per_frame
        fed = np.concatenate([speech, np.zeros(int(silence_after_s * SAMPLE_RATE), np.float32)])
        for i in range(0, fed.size, 320):
            await asyncio.sleep(max(0.0, t0 + i / SAMPLE_RATE - loop.time()))
            session.push_audio(fed[i : i + 320])
            if first_speech_frame(frames) is not None and sum(f.speech for f in frames) >= spoken * 0.9:
                break
        deadline = time.monotonic() + max_wait_s
        while time.monotonic() < deadline and sum(f.speech for f in frames) < spoken * 0.9:
            await asyncio.sleep(0.05)
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        stats = session.stats()
        await session.close()
    finally:
        await engine.shutdown()
    first_speech = first_speech_frame(frames)
    return {
        "speech_s": _r(speech.size / SAMPLE_RATE),
        "first_speech_frame_latency_s": None if first_speech is None else _r(first_speech.emitted_at - first_push),
        "latency_mean_s": None if stats["latency_mean_s"] is None else _r(stats["latency_mean_s"]),
        "latency_p95_s": None if stats["latency_p95_s"] is None else _r(stats["latency_p95_s"]),
        "frames": stats["frames_emitted"],
        "filler_frames": stats["filler_frames"],
        "speech_frames_played": sum(f.speech for f in frames),
        "window_compute_s": _r(stats["window_compute_s"]),
        "idle_frames_cut": stats["idle_frames_cut"],
        "quality": stats["quality"],
    }


def first_speech_frame(frames: list) -> Any:
    return next((f for f in frames if f.speech and not f.filler), None)


async def speech_onset(gen: InfiniteTalkGenerator, avatar: Avatar, speech: np.ndarray, max_wait_s: float,
                       leads: int = 3) -> dict[str, Any]:
    """First-speech-frame latency with and without cutting queued idle frames at speech onset, over
    `leads` idle lead times spread across one window (fixed quality; interleaved). The speech is
    followed by silence, as from an open microphone."""
    out: dict[str, list[float]] = {"cut_idle": [], "no_cut": []}
    cut_frames = []
    for k in range(leads):
        lead = 0.5 + gen.window.window_seconds * k / leads
        for name, cut in (("cut_idle", True), ("no_cut", False)):
            r = await engine_live(gen, avatar, speech, QualitySettings(enabled=False), max_wait_s, cut, lead,
                                  silence_after_s=gen.window.window_seconds * 2 + 2)
            if r["first_speech_frame_latency_s"] is not None:
                out[name].append(r["first_speech_frame_latency_s"])
            if cut:
                cut_frames.append(r["idle_frames_cut"])
    mean = {k: _r(float(np.mean(v))) if v else None for k, v in out.items()}
    return {
        "idle_lead_s": [_r(0.5 + gen.window.window_seconds * k / leads) for k in range(leads)],
        "first_speech_frame_latency_s": {k: [_r(x) for x in v] for k, v in out.items()},
        "mean_s": mean, "idle_frames_cut": cut_frames,
        "latency_ratio_no_cut_vs_cut": _r(mean["no_cut"] / mean["cut_idle"]) if all(mean.values()) else None,
    }


async def engine_sessions(gen: InfiniteTalkGenerator, avatars: list[Avatar], speech: np.ndarray,
                          max_batch: int) -> dict[str, Any]:
    """N offline sessions at once on one worker: throughput and each session's latency."""
    engine = Engine(gen, max_batch=max_batch)
    try:
        settings = SessionSettings(planner=PlannerSettings(realtime=False), max_buffer_s=len(speech) / SAMPLE_RATE + 5)
        sessions = [await engine.open_session(a, settings) for a in avatars]
        t0 = time.perf_counter()

        async def run(s) -> tuple[float, float, int]:
            s.push_audio(speech)
            s.end_input()
            first, n = None, 0
            async for _ in s.frames():
                first = first if first is not None else time.perf_counter() - t0
                n += 1
            return first or 0.0, time.perf_counter() - t0, n

        results = await asyncio.gather(*(run(s) for s in sessions))
        wall = time.perf_counter() - t0
        stats = engine.stats()
        sizes = dict(engine.worker.stats.batch_sizes)
        for s in sessions:
            await s.close()
    finally:
        await engine.shutdown()
    fps = gen.window.fps
    video_s = sum(n for _, _, n in results) / fps
    return {
        "sessions": len(avatars),
        "max_batch": max_batch,
        "wall_s": _r(wall),
        "video_s_total": _r(video_s),
        "throughput_video_s_per_s": _r(video_s / wall),
        "first_frame_latency_s": [_r(f) for f, _, _ in results],
        "per_session_realtime_factor": [_r((n / fps) / done) for _, done, n in results],
        "batched_passes": stats["worker_batches"],
        "passes_by_size": {str(k): v for k, v in sorted(sizes.items())},
    }


# ------------------------------------------------------------------------------ fewer model calls
def guidance_calls(gen: InfiniteTalkGenerator, avatar: Avatar, repeats: int) -> dict[str, Any]:
    """Denoise one window: guidance branches batched in one DiT call vs one call per branch, and
    guidance-free (one branch: what few-step LoRA presets run) vs the configured guidance."""
    pipe = gen.bundle.pipe
    device = pipe.device
    base = gen.settings.window
    if base.guidance.calls_per_step < 2:
        base = dataclasses.replace(base, guidance=GuidanceScales(5.0, 4.0))
    cfg = pipe.dit.cfg
    image = torch.from_numpy(avatar.frames[0])
    cond = pipe.condition(u8_to_unit(image)[:, None], base.frame_num)
    g = torch.Generator().manual_seed(0)
    audio = torch.randn(1, base.frame_num, cfg.audio_window, cfg.audio_layers, cfg.audio_width, generator=g)
    h, w = (d // pipe.vae_stride for d in image.shape[:2])
    motion = pipe.encode_motion(u8_to_unit(image)[:, None].expand(3, base.motion_frames, -1, -1))
    noise = torch.randn(16, base.latent_frames, h, w, generator=g)

    variants = [base, dataclasses.replace(base, batch_branches=False),
                dataclasses.replace(base, guidance=GuidanceScales(1.0, 1.0))]
    for v in variants:
        pipe.denoise(cond, audio, motion, noise, v)  # warm-up
    took: list[list[float]] = [[] for _ in variants]
    for _ in range(repeats):  # interleaved, so that a busy machine slows each variant alike
        for k, v in enumerate(variants):
            _sync(device)
            t0 = time.perf_counter()
            pipe.denoise(cond, audio, motion, noise, v)
            _sync(device)
            took[k].append((time.perf_counter() - t0) / v.steps)
    batched, separate, free = (statistics.median(t) for t in took)
    return {
        "branches": base.guidance.calls_per_step,
        "guidance": [base.guidance.text, base.guidance.audio],
        "s_per_step_separate_calls": _r(separate, 5),
        "s_per_step_batched_branches": _r(batched, 5),
        "batched_branches_speedup": _r(separate / batched, 3),
        "s_per_step_guidance_free": _r(free, 5),
        "guidance_free_speedup_vs_batched": _r(batched / free, 3),
    }
