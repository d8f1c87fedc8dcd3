"""Benchmark: cluster mode vs the single-process server, on this machine, lite backend.

Each configuration runs `infinitetalk-live serve` as a subprocess (`--cluster local:N` or none);
websocket clients in this process stream real speech in real time and read every frame.

- one session: the latency clients see (frame header, speech frames), the gateway's CPU ms per
  frame (for the single-process server: the whole server's, model included) and the workers' CPU
  ms per frame (from /proc), and bytes per session per second between gateway and workers
  (`infinitetalk_cluster_link_bytes_total`);
- throughput: 1, 2, 3, 4, 6, 8 sessions at once until one of them falls below 24 fps or more than
  2 % of its frames are fillers; the most that held is reported;
- with 2 workers: kill one worker's process during a session: seconds until that session's
  websocket closes, and until `/api/cluster` shows the worker alive again (a new pid).

Prints one JSON object. About 3-4 minutes on 2 cores.

    python bench/cluster.py [--seconds 4] [--max-sessions 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import sys
import time
import wave
from pathlib import Path

import aiohttp
import numpy as np

from model.timebase import SAMPLE_RATE, VIDEO_FPS

REPO = Path(__file__).resolve().parents[1]
HEADER = bytes([0x41, 1, 0, 0])
CHUNK = SAMPLE_RATE // 50  # 20 ms client messages


def speech_pcm() -> np.ndarray:
    root = Path(os.environ.get("INFINITETALK_TEST_AUDIO", REPO.parent / "shared" / "audio"))
    with wave.open(str(root / "speech_en1.wav")) as w:
        return np.frombuffer(w.readframes(w.getnframes()), np.int16).copy()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """`serve` in a subprocess on a free port; `cluster`: None (single process) or local:N."""

    def __init__(self, cluster: str | None) -> None:
        self.cluster = cluster

    async def __aenter__(self) -> Server:
        args = [sys.executable, "-m", "server.cli", "serve", "--port", "0", "--max-sessions", "32",
                "--max-sessions-per-client", "32", "--log-level", "warning", "--sessions-per-worker", "8"]
        if self.cluster:
            args += ["--cluster", self.cluster]
        self.proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE, cwd=REPO)
        line = await asyncio.wait_for(self.proc.stdout.readline(), 180)
        m = re.search(r"http://([\d.]+):(\d+)/", line.decode())
        assert m, f"server did not start: {line!r}"
        self.url = f"http://{m[1]}:{m[2]}"
        return self

    async def __aexit__(self, *exc) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except asyncio.TimeoutError:
            self.proc.kill()

    async def get(self, path: str) -> str:
        async with aiohttp.ClientSession() as http, http.get(self.url + path) as r:
            return await r.text()

    async def worker_pids(self) -> list[int]:
        if not self.cluster:
            return []
        return [w["pid"] for w in json.loads(await self.get("/api/cluster"))["workers"]]

    async def link_bytes(self) -> float:
        text = await self.get("/metrics")
        return sum(float(v) for v in re.findall(r'^infinitetalk_cluster_link_bytes_total\{[^}]*\} (\S+)$', text, re.M))


async def session(url: str, pcm: np.ndarray, seconds: float) -> dict:
    """One websocket session: `seconds` of speech in real time; frame times, fillers, speech latencies."""
    times, fillers, latencies = [], 0, []
    async with aiohttp.ClientSession() as http, http.ws_connect(url.replace("http", "ws") + "/ws") as ws:
        await ws.send_json({"type": "hello", "version": 1})
        ready = await asyncio.wait_for(ws.receive_json(), 60)
        assert ready["type"] == "ready", ready
        done = asyncio.Event()
        closed: dict = {}

        async def receive() -> None:
            nonlocal fillers
            from server.ws_protocol import unpack_frame

            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    f = unpack_frame(msg.data)
                    times.append(time.monotonic())
                    fillers += f.filler
                    if f.speech and np.isfinite(f.latency):
                        latencies.append(f.latency)
                elif msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data)["type"] == "error":
                    closed["error"] = json.loads(msg.data)["code"]
            closed["at"] = time.monotonic()
            done.set()

        rx = asyncio.create_task(receive())
        t0 = time.monotonic()
        n = int(seconds * SAMPLE_RATE)
        for i in range(0, n, CHUNK):
            if done.is_set():
                break
            await asyncio.sleep(max(0.0, t0 + i / SAMPLE_RATE - time.monotonic()))
            try:
                await ws.send_bytes(HEADER + pcm[i % pcm.size: i % pcm.size + CHUNK].tobytes())
            except ConnectionResetError:  # the server closed it (a killed worker's session)
                break
        if not done.is_set() and not ws.closed:
            await ws.send_json({"type": "bye"})
        await asyncio.wait_for(rx, 15)
    t = np.array(times[10:])
    fps = (len(t) - 1) / (t[-1] - t[0]) if len(t) > 2 else 0.0
    return {"fps": fps, "frames": len(times), "fillers": fillers, "latencies": latencies, **closed}


async def one_session(server: Server, pcm: np.ndarray, seconds: float) -> dict:
    pids = await server.worker_pids()
    g0, w0, b0 = cpu_seconds(server.proc.pid), sum(cpu_seconds(p) for p in pids), await server.link_bytes()
    t0 = time.monotonic()
    r = await session(server.url, pcm, seconds)
    elapsed = time.monotonic() - t0
    g1, w1, b1 = cpu_seconds(server.proc.pid), sum(cpu_seconds(p) for p in pids), await server.link_bytes()
    frames = max(r["frames"], 1)
    out = {"fps": round(r["fps"], 2), "latency_mean_s": round(float(np.mean(r["latencies"])), 4),
           "latency_p95_s": round(float(np.percentile(r["latencies"], 95)), 4),
           "gateway_cpu_ms_per_frame": round(1000 * (g1 - g0) / frames, 3)}
    if pids:
        out["workers_cpu_ms_per_frame"] = round(1000 * (w1 - w0) / frames, 3)
        out["link_bytes_per_session_s"] = round((b1 - b0) / elapsed)
    return out


async def throughput(server: Server, pcm: np.ndarray, seconds: float, most: int) -> dict:
    held, trials = 0, []
    for k in (1, 2, 3, 4, 6, 8, 12, 16):
        if k > most:
            break
        results = await asyncio.gather(*(session(server.url, pcm, seconds) for _ in range(k)))
        worst = min(r["fps"] for r in results)
        filler = max(r["fillers"] / max(r["frames"], 1) for r in results)
        ok = worst >= VIDEO_FPS - 1 and filler <= 0.02
        trials.append({"sessions": k, "min_fps": round(worst, 2), "max_filler_share": round(filler, 3), "ok": ok})
        if not ok:
            break
        held = k
    return {"sessions_at_25fps": held, "trials": trials}


async def kill_worker(server: Server, pcm: np.ndarray) -> dict:
    task = asyncio.create_task(session(server.url, pcm, 20.0))
    await asyncio.sleep(2.0)
    workers = json.loads(await server.get("/api/cluster"))["workers"]
    victim = next(w for w in workers if w["sessions"] > 0)
    t_kill = time.monotonic()
    os.kill(victim["pid"], signal.SIGKILL)
    r = await task
    back = None
    while time.monotonic() - t_kill < 60:
        w = json.loads(await server.get("/api/cluster"))["workers"][victim["id"]]
        if w["alive"] and w["pid"] != victim["pid"]:
            back = time.monotonic() - t_kill
            break
        await asyncio.sleep(0.1)
    return {"kill_to_close_s": round(r["at"] - t_kill, 3), "close_error": r.get("error"),
            "kill_to_worker_back_s": None if back is None else round(back, 2)}


async def bench(seconds: float, most: int) -> dict:
    pcm = speech_pcm()
    report: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "backend": "lite"}
    for name, cluster in (("single_process", None), ("cluster_1_worker", "local:1"), ("cluster_2_workers", "local:2")):
        async with Server(cluster) as server:
            entry = {"one_session": await one_session(server, pcm, seconds),
                     "throughput": await throughput(server, pcm, seconds, most)}
            if cluster == "local:2":
                entry["worker_kill"] = await kill_worker(server, pcm)
            report[name] = entry
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=4.0, help="speech per session per trial")
    p.add_argument("--max-sessions", type=int, default=8)
    a = p.parse_args()
    print(json.dumps(asyncio.run(bench(a.seconds, a.max_sessions)), indent=1))


if __name__ == "__main__":
    main()
