"""Soak: N websocket sessions streaming real speech in real time for minutes, on loopback.

The server runs in this process (so its tasks, threads, sessions and connections can be counted
directly); N clients send speech (the test WAVs, looped with pauses, each from its own offset)
in 20 ms messages paced by the clock and read every frame. After a warm-up, it measures per
session the output frame rate (`fps_per_session`: least-squares slope of arrival time over frame
index; `fps_per_session_count`: frames / elapsed, which the ends' jitter moves by up to
~0.1 s / duration), the frame interval jitter at the client, stalls (gaps > 0.5 s),
filler frames, errors; the process RSS after the warm-up and at the end; and, once every client
has left, what is left: asyncio tasks, threads, engine sessions, connections, worker jobs.

    python bench/soak.py [--sessions 8] [--seconds 180] [--backend lite|tiny] [--size 256]

Prints one JSON object. The RSS is the whole process (server and clients); the clients keep only
timestamps and flags per frame (a few MB over a long run, counted in the growth).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import struct
import sys
import tempfile
import threading
import wave
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from model.timebase import SAMPLE_RATE

REPO = Path(__file__).resolve().parents[1]


STALL_S = 0.5
FRAME_HEADER = struct.Struct("<BBBBIfI")


@dataclass(frozen=True)
class SoakOptions:
    sessions: int = 8
    seconds: float = 180.0
    warmup_s: float = 10.0
    backend: str = "lite"  # lite | tiny (the tiny random InfiniteTalk, 32x32)
    size: int = 256
    jpeg_quality: int = 70
    chunk_ms: int = 20
    speech_dir: Path | None = None


@dataclass
class ClientLog:
    """Per frame 12 bytes (compact arrays), so the clients' own records barely move the RSS."""

    arrivals: array = field(default_factory=lambda: array("d"))
    indices: array = field(default_factory=lambda: array("l"))
    filler_times: list[float] = field(default_factory=list)
    speech_frames: int = 0
    errors: list[dict] = field(default_factory=list)
    close_code: int | None = None
    last_stats: dict = field(default_factory=dict)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def load_speech(folder: Path | None) -> np.ndarray:
    """The test speech files, each followed by 1 s of silence, as one int16 16 kHz loop."""
    candidates = [folder, os.environ.get("INFINITETALK_TEST_AUDIO"), REPO.parent / "shared" / "audio",
                  "/work/shared/audio"]
    for d in candidates:
        if d and Path(d).is_dir() and list(Path(d).glob("speech_*.wav")):
            parts = []
            for p in sorted(Path(d).glob("*.wav")):
                with wave.open(str(p)) as w:
                    if (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (SAMPLE_RATE, 1, 2):
                        parts += [np.frombuffer(w.readframes(w.getnframes()), np.int16), np.zeros(SAMPLE_RATE, np.int16)]
            return np.concatenate(parts)
    raise FileNotFoundError("no test speech found: pass --speech-dir (16 kHz mono WAVs, e.g. ../shared/audio)")


def make_generator(opts: SoakOptions, workdir: Path):
    from streaming.backends import create_generator

    if opts.backend == "lite":
        return create_generator("lite", width=opts.size, height=opts.size)
    if opts.backend == "tiny":
        import torch

        from model.families import ModelOptions
        from model.infinitetalk.tiny import write_tiny_weights
        from streaming.backends.infinitetalk import InfiniteTalkOptions
        from streaming.features import FeatureSettings

        torch.set_num_threads(1)
        write_tiny_weights(workdir / "tiny")
        model = ModelOptions(weights=workdir / "tiny", device="cpu", dtype="fp32", size=(32, 32), frames=17,
                             motion_frames=5, steps=2, shift=5.0, text_scale=1.0, audio_scale=2.0, verify_weights="off")
        return create_generator("infinitetalk", InfiniteTalkOptions(
            model, features=FeatureSettings(left_context_frames=25, lookahead_frames=4, block_frames=4)))
    raise ValueError(f"--backend {opts.backend!r}: use lite or tiny")


async def client(url: str, speech: np.ndarray, offset: int, stop_at: float, log: ClientLog, quality: int,
                 chunk_ms: int = 20) -> None:
    import aiohttp

    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as http, http.ws_connect(url, max_msg_size=0) as ws:
        await ws.send_json({"type": "hello", "version": 1, "video": {"quality": quality}})

        async def send() -> None:
            t0, k, chunk = loop.time(), 0, 16 * chunk_ms
            header = bytes([0x41, 1, 0, 0])
            try:
                while loop.time() < stop_at:
                    await asyncio.sleep(max(0.0, t0 + k * chunk / SAMPLE_RATE - loop.time()))
                    start = (offset + k * chunk) % (speech.size - chunk)
                    await ws.send_bytes(header + speech[start : start + chunk].tobytes())
                    k += 1
                await ws.send_json({"type": "stats"})
                await asyncio.sleep(0.3)
                await ws.send_json({"type": "bye"})
            except (ConnectionError, RuntimeError):
                pass  # the server closed the connection: the reader records why

        sender = asyncio.create_task(send())
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                _, _, flags, _, index, _, _ = FRAME_HEADER.unpack_from(msg.data)
                log.arrivals.append(loop.time())
                log.indices.append(index)
                if flags & 2:
                    log.filler_times.append(log.arrivals[-1])
                log.speech_frames += bool(flags & 1)
            elif msg.type == aiohttp.WSMsgType.TEXT:
                body = json.loads(msg.data)
                if body.get("type") == "error":
                    log.errors.append(body)
                elif body.get("type") == "stats":
                    log.last_stats = body
        log.close_code = ws.close_code
        await sender


def summarise(logs: list[ClientLog], t_steady: float, t_stop: float, fps: int) -> dict:
    per_fps, per_count_fps, intervals, stalls, held = [], [], [], 0, 0
    for log in logs:
        t = np.array(log.arrivals)
        keep = (t >= t_steady) & (t <= t_stop)
        steady, idx = t[keep], np.array(log.indices)[keep]
        if steady.size > 2:
            # Least-squares slope of arrival time over frame index: the long-run rate, not the ends' jitter.
            per_fps.append(round(1.0 / float(np.polyfit(idx, steady, 1)[0]), 3))
            per_count_fps.append(round((steady.size - 1) / (steady[-1] - steady[0]), 3))
        else:
            per_fps.append(0.0)
            per_count_fps.append(0.0)
        dt = np.diff(steady)
        intervals.append(dt)
        stalls += int(np.sum(dt > STALL_S))
        in_order = bool(np.array_equal(np.array(log.indices), np.arange(len(log.indices))))
        held += bool(log.close_code == 1000 and not log.errors and in_order and steady.size > 2
                     and t[-1] >= t_stop - STALL_S)
    dt = np.concatenate(intervals) if intervals else np.zeros(1)
    jitter = np.abs(dt - 1.0 / fps) * 1000
    worst = max(per_fps, key=lambda f: abs(f - fps)) if per_fps else 0.0
    return {
        "sessions_held": held,
        "fps_target": fps,
        "fps_per_session": per_fps,
        "fps_per_session_count": per_count_fps,
        "fps_worst": worst,
        "fps_worst_error_pct": round(abs(worst - fps) / fps * 100, 3),
        "frame_interval_ms": {"p50": round(float(np.percentile(dt, 50)) * 1000, 2),
                              "p99": round(float(np.percentile(dt, 99)) * 1000, 2),
                              "max": round(float(dt.max()) * 1000, 2)},
        "jitter_ms": {"p50": round(float(np.percentile(jitter, 50)), 2), "p99": round(float(np.percentile(jitter, 99)), 2)},
        "stalls": stalls,
        "frames": sum(len(log.arrivals) for log in logs),
        "filler_frames": sum(len(log.filler_times) for log in logs),
        "filler_frames_steady": sum(sum(t_steady <= t <= t_stop for t in log.filler_times) for log in logs),
        "frames_steady": sum(sum(t_steady <= t <= t_stop for t in log.arrivals) for log in logs),
        "speech_frames": sum(log.speech_frames for log in logs),
        "dropped_frames": sum(int(log.last_stats.get("dropped_frames") or 0) for log in logs),
        "errors": [e for log in logs for e in log.errors],
        "close_codes": sorted({log.close_code for log in logs}, key=str),
    }


async def run_soak(opts: SoakOptions) -> dict:
    """Run the soak and return the figures (see the module docstring)."""
    from aiohttp import web

    from server.app import build_app
    from server.avatars import AvatarStore
    from server.config import ServerConfig
    from server.context import CONTEXT
    from streaming.avatars import default_avatar
    from streaming.engine import Engine

    speech = load_speech(opts.speech_dir)
    n = opts.sessions
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        generator = await asyncio.to_thread(make_generator, opts, Path(tmp))
        engine = Engine(generator)
        config = ServerConfig(port=0, max_sessions=n, max_sessions_per_client=n, rate_limit_burst=2 * n + 10)
        app = build_app(config, engine, AvatarStore({"astronaut": default_avatar}, None, "astronaut"), owns_engine=True)
        ctx = app[CONTEXT]
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"ws://127.0.0.1:{runner.addresses[0][1]}/ws"
        loop = asyncio.get_running_loop()
        try:
            # Warm every pool and lazy import once, then count what exists.
            await client(url, speech, 0, loop.time() + 1.0, ClientLog(), opts.jpeg_quality, opts.chunk_ms)
            await asyncio.sleep(0.5)
            tasks_before = len(asyncio.all_tasks())
            threads_before = len(threading.enumerate())
            t_start = loop.time()
            t_steady, t_stop = t_start + opts.warmup_s, t_start + opts.seconds
            logs = [ClientLog() for _ in range(n)]
            clients = []
            for i in range(n):
                offset = i * speech.size // n
                clients.append(asyncio.create_task(
                    client(url, speech, offset, t_stop, logs[i], opts.jpeg_quality, opts.chunk_ms)))
                await asyncio.sleep(0.05)
            await asyncio.sleep(max(0.0, t_steady - loop.time()))
            gc.collect()
            start = rss_mb()  # every session is up and has streamed for the warm-up
            cpu0, wall0 = cpu_seconds(), loop.time()
            # Frames are measured from 0.5 s after that collection (its pause is ours, not the server's)
            # to 0.2 s before the last one.
            measure_from, measure_to = loop.time() + 0.5, t_stop - 0.2
            rss_samples = [(round(loop.time() - t_start, 1), round(start, 1))]
            while loop.time() < t_stop - 0.05:
                await asyncio.sleep(min(5.0, t_stop - loop.time()))
                rss_samples.append((round(loop.time() - t_start, 1), round(rss_mb(), 1)))
            cpu_share = (cpu_seconds() - cpu0) / (loop.time() - wall0)
            gc.collect()
            end = rss_mb()
            await asyncio.wait_for(asyncio.gather(*clients), 30)
            settle_end = loop.time() + 10
            while (ctx.engine.sessions or ctx.connections or len(asyncio.all_tasks()) > tasks_before) \
                    and loop.time() < settle_end:
                await asyncio.sleep(0.1)
            result = {
                "backend": generator.name, "size": list(generator.output_size(default_avatar())),
                "sessions": n, "seconds": opts.seconds, "warmup_s": opts.warmup_s,
                **summarise(logs, measure_from, measure_to, generator.window.fps),
                "rss_mb": {"start": round(start, 1), "end": round(end, 1),
                           "growth_pct": round((end - start) / start * 100, 2), "samples": rss_samples},
                "tasks": {"before": tasks_before, "after": len(asyncio.all_tasks())},
                "threads": {"before": threads_before, "after": len(threading.enumerate()),
                            "names_after": sorted({t.name.rstrip("0123456789_") for t in threading.enumerate()})},
                "engine_sessions_after": len(ctx.engine.sessions),
                "connections_after": len(ctx.connections),
                "worker": {"queue_depth_after": ctx.engine.worker.queue_depth,
                           "jobs_failed": ctx.engine.worker.stats.jobs_failed,
                           "jobs_done": ctx.engine.worker.stats.jobs_done},
                "process_cpu_cores": round(cpu_share, 3),
                "cpu_count": os.cpu_count(),
                "load_avg": [round(x, 2) for x in os.getloadavg()],
            }
        finally:
            await runner.cleanup()
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds before measuring (default 10)")
    ap.add_argument("--backend", choices=["lite", "tiny"], default="lite")
    ap.add_argument("--size", type=int, default=256, help="lite output size (square), default 256")
    ap.add_argument("--quality", type=int, default=70, help="JPEG quality the clients ask for (default 70)")
    ap.add_argument("--chunk-ms", type=int, default=20, help="audio per websocket message (default 20 ms)")
    ap.add_argument("--speech-dir", type=Path, default=None)
    a = ap.parse_args(argv)
    opts = SoakOptions(sessions=a.sessions, seconds=a.seconds, warmup_s=a.warmup, backend=a.backend, size=a.size,
                       jpeg_quality=a.quality, chunk_ms=a.chunk_ms, speech_dir=a.speech_dir)
    result = asyncio.run(run_soak(opts))
    print(json.dumps({"options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
                      **result}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
