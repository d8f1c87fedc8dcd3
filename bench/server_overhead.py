"""Benchmark: what the server itself costs per frame (pacing, JPEG, websocket framing, VP8 for WebRTC).

A server subprocess runs a zero-cost backend (it returns the avatar image, no compute), so its
CPU time is all server overhead; N websocket clients in this process stream real speech in real
time and read every frame. Reported per phase: server CPU ms per emitted frame, that as a share of
the 40 ms frame budget (one core), the fps each client received, and the server's cores in use.
A WebRTC phase does the same with one aiortc client (adds VP8 + Opus encode, Opus decode). If
the lite backend is installed, a last phase runs it through the whole server. Prints one JSON
object; about 60 s.

    python bench/server_overhead.py [--seconds 6] [--sessions 1,4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import sys
import time
import wave
from pathlib import Path

import numpy as np

from model.timebase import SAMPLE_RATE
from streaming.generator import Avatar, WindowJob, WindowSpec

REPO = Path(__file__).resolve().parents[1]

FRAME_BUDGET_MS = 40.0
SIZE = 512


class ZeroCostGenerator:
    """A backend that costs nothing: every frame is the avatar image as given (resized once)."""

    name = "zero"
    description = "zero: benchmark backend (returns the avatar image, no compute)"

    def __init__(self, size: int = SIZE) -> None:
        self.window = WindowSpec(new_frames=4)
        self.size = size

    def output_size(self, avatar: Avatar) -> tuple[int, int]:
        return self.size, self.size

    def open_session(self, session_id: str, avatar: Avatar, speakers: int = 1) -> np.ndarray:
        import cv2

        return np.ascontiguousarray(cv2.resize(avatar.frames[0], (self.size, self.size)))

    def generate(self, state: np.ndarray, job: WindowJob):
        for _ in range(self.window.new_frames):
            yield state

    def close_session(self, state: np.ndarray) -> None:
        pass


# ---------------------------------------------------------------------------------------- server side
async def run_server(backend: str) -> None:
    from aiohttp import web

    from server.app import build_app
    from server.avatars import AvatarStore
    from server.config import ServerConfig
    from streaming.avatars import default_avatar
    from streaming.engine import Engine

    if backend == "zero":
        generator = ZeroCostGenerator()
    else:
        from streaming.backends import create_generator

        generator = create_generator(backend)
    store = AvatarStore({"astronaut": default_avatar}, None, "astronaut")
    app = build_app(ServerConfig(port=0, max_sessions=64), Engine(generator), store, owns_engine=True)
    runner = web.AppRunner(app, handle_signals=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(f"READY {runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()


# ---------------------------------------------------------------------------------------- client side
def speech_pcm() -> np.ndarray:
    for d in (os.environ.get("INFINITETALK_TEST_AUDIO"), REPO.parent / "shared" / "audio", "/work/shared/audio"):
        p = Path(d or "") / "speech_en1.wav"
        if d and p.is_file():
            with wave.open(str(p)) as w:
                return np.frombuffer(w.readframes(w.getnframes()), np.int16).copy()
    rng = np.random.default_rng(0)
    return (rng.standard_normal(SAMPLE_RATE * 8) * 3000).astype(np.int16)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    def __init__(self, backend: str) -> None:
        self.backend = backend

    async def __aenter__(self) -> Server:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--serve", self.backend, stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        line = (await asyncio.wait_for(self.proc.stdout.readline(), 60)).decode()
        m = re.match(r"READY (\d+)", line)
        if not m:
            raise RuntimeError(f"server did not start: {line!r}")
        self.url = f"http://127.0.0.1:{m.group(1)}"
        return self

    async def __aexit__(self, *exc) -> None:
        self.proc.terminate()
        await self.proc.wait()


async def ws_client(url: str, pcm: np.ndarray, stop: asyncio.Event, counts: list) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as http, http.ws_connect(url.replace("http", "ws") + "/ws") as ws:
        await ws.send_json({"type": "hello", "version": 1})
        await ws.receive_json()

        async def send() -> None:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            i = 0
            while not stop.is_set():
                await asyncio.sleep(max(0.0, t0 + i / SAMPLE_RATE - loop.time()))
                chunk = pcm[i % pcm.size : i % pcm.size + 320]
                await ws.send_bytes(bytes([0x41, 1, 0, 0]) + chunk.tobytes())
                i += 320

        sender = asyncio.create_task(send())
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                counts.append(time.monotonic())
            if stop.is_set():
                break
        sender.cancel()
        await ws.send_json({"type": "bye"})


async def measure(server: Server, start_clients, seconds: float, warmup: float = 1.5) -> dict:
    stop = asyncio.Event()
    counts_list, tasks = await start_clients(stop)
    await asyncio.sleep(warmup)
    c0, t0 = cpu_seconds(server.proc.pid), time.monotonic()
    n0 = [len(c) for c in counts_list]
    await asyncio.sleep(seconds)
    c1, t1 = cpu_seconds(server.proc.pid), time.monotonic()
    n1 = [len(c) for c in counts_list]
    stop.set()
    await asyncio.wait(tasks, timeout=5)
    frames = sum(b - a for a, b in zip(n0, n1, strict=True))
    cpu = c1 - c0
    ms = 1000 * cpu / max(frames, 1)
    return {
        "sessions": len(counts_list),
        "frames": frames,
        "server_cpu_ms_per_frame": round(ms, 3),
        "share_of_40ms_budget": round(ms / FRAME_BUDGET_MS, 4),
        "server_cpu_cores": round(cpu / (t1 - t0), 3),
        "fps_per_session": [round((b - a) / (t1 - t0), 2) for a, b in zip(n0, n1, strict=True)],
    }


async def ws_phase(backend: str, sessions: int, seconds: float, pcm: np.ndarray) -> dict:
    async with Server(backend) as server:
        async def start(stop):
            counts = [[] for _ in range(sessions)]
            tasks = [asyncio.create_task(ws_client(server.url, pcm, stop, c)) for c in counts]
            return counts, tasks

        return {"transport": "websocket", "backend": backend, **await measure(server, start, seconds)}


class _PacedArray:
    """PCM16 at 16 kHz played like a microphone (20 ms chunks in real time): an `AudioSource` for the demo
    client's WebRTC track."""

    sample_rate = SAMPLE_RATE

    def __init__(self, pcm: np.ndarray) -> None:
        self.pcm = pcm

    async def chunks(self):  # noqa: ANN201 - AsyncIterator[np.ndarray]
        chunk = SAMPLE_RATE // 50
        t0 = asyncio.get_running_loop().time()
        for k, start in enumerate(range(0, self.pcm.size, chunk)):
            await asyncio.sleep(max(0.0, t0 + k * chunk / SAMPLE_RATE - asyncio.get_running_loop().time()))
            yield self.pcm[start : start + chunk]


async def webrtc_phase(seconds: float, pcm: np.ndarray) -> dict:
    import aiohttp
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from client_demo.rtc_client import SourceTrack

    async with Server("zero") as server:
        pc = RTCPeerConnection()
        counts: list[float] = []

        async def start(stop):
            pc.addTrack(SourceTrack(_PacedArray(np.tile(pcm, 4))))
            pc.addTransceiver("video", direction="recvonly")
            pc.createDataChannel("control")
            readers = []

            @pc.on("track")
            def on_track(track):
                async def read():
                    from aiortc.mediastreams import MediaStreamError

                    while not stop.is_set():
                        try:
                            await track.recv()
                        except MediaStreamError:
                            return
                        if track.kind == "video":
                            counts.append(time.monotonic())

                readers.append(asyncio.create_task(read()))

            await pc.setLocalDescription(await pc.createOffer())
            offer = {"sdp": pc.localDescription.sdp, "type": "offer"}
            async with aiohttp.ClientSession() as http, http.post(server.url + "/offer", json=offer) as r:
                answer = await r.json()
            await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
            while not counts:
                await asyncio.sleep(0.05)
            return [counts], [asyncio.create_task(stop.wait())]

        result = await measure(server, start, seconds)
        await pc.close()
        return {"transport": "webrtc", "backend": "zero", **result,
                "note": "server CPU includes VP8 + Opus encode and the microphone's Opus decode"}


async def bench(seconds: float, session_counts: list[int]) -> dict:
    load_before = os.getloadavg()[0]
    pcm = speech_pcm()
    phases = [await ws_phase("zero", n, seconds, pcm) for n in session_counts]
    phases.append(await webrtc_phase(seconds, pcm))
    try:
        import streaming.backends.lite  # noqa: F401

        lite = [await ws_phase("lite", n, seconds, pcm) for n in session_counts]
    except ImportError:
        lite = "lite backend not installed"
    return {
        "benchmark": "server_overhead",
        "frame": f"{SIZE}x{SIZE} RGB, JPEG quality 80 (websocket), VP8 (WebRTC)",
        "frame_budget_ms": FRAME_BUDGET_MS,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                    "note": "load average before/after: other processes on the machine slow the lite phases"},
        "zero_cost_backend": phases,
        "lite_through_server": lite,
        "how": "server CPU time (utime+stime of the server process) / frames the clients received; "
               "clients run in another process and stream real speech in real time",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--sessions", default="1,4", help="comma-separated session counts for the websocket phases")
    ap.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(run_server(args.serve))
        return
    counts = [int(x) for x in args.sessions.split(",") if x]
    print(json.dumps(asyncio.run(bench(args.seconds, counts)), indent=2))


if __name__ == "__main__":
    main()
