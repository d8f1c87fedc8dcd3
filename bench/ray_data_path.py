"""Benchmark: two ways to bring a session's frames from a Ray actor to the gateway, on a local Ray.

An actor makes raw RGB frames (512x512) at 25 fps for each of N streams, in windows of 4 frames a
few milliseconds apart (as a worker does). The driver (the gateway's role) receives them by:

- `take`: a long-poll actor call returning every frame made since the last call, after waiting up
  to 0.25 s for the first and then 10 ms for the rest of the burst (what `server/cluster` does);
- `stream`: a Ray streaming generator (an async generator method) yielding each frame as it is made.

Reported per mode: the driver's CPU ms per frame, the actor's CPU ms per frame (from /proc), and
the delay from a frame being made to the driver having it (mean and p95; one host, one clock).
Prints one JSON object; about 40 s.

    python bench/ray_data_path.py [--seconds 6] [--streams 1,4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

import numpy as np

from model.timebase import VIDEO_FPS

SIZE = 512
WINDOW = 4


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Source:
    """The actor: N streams of frames, a window of 4 every 4/25 s."""

    def __init__(self) -> None:
        self.queues: dict[int, list] = {}
        self.events: dict[int, asyncio.Event] = {}
        self.tasks: list[asyncio.Task] = []

    def pid(self) -> int:
        return os.getpid()

    async def start(self, streams: int, seconds: float) -> None:
        for s in range(streams):
            self.queues[s], self.events[s] = [], asyncio.Event()
            self.tasks.append(asyncio.create_task(self._produce(s, seconds)))

    async def _produce(self, s: int, seconds: float) -> None:
        rng = np.random.default_rng(s)
        t0, n = time.monotonic(), 0
        while n < seconds * VIDEO_FPS:
            await asyncio.sleep(max(0.0, t0 + n / VIDEO_FPS - time.monotonic()))
            for _ in range(WINDOW):
                img = rng.integers(0, 255, (SIZE, SIZE, 3), np.uint8)
                self.queues[s].append((time.monotonic(), img))
                self.events[s].set()
                n += 1
                await asyncio.sleep(0.002)
        self.queues[s].append(None)
        self.events[s].set()

    async def take(self, s: int, wait_s: float, linger_s: float) -> list:
        if not self.queues[s]:
            try:
                await asyncio.wait_for(self.events[s].wait(), wait_s)
            except asyncio.TimeoutError:
                return []
            await asyncio.sleep(linger_s)
        out, self.queues[s] = self.queues[s], []
        self.events[s].clear()
        return out

    async def stream(self, s: int):
        while True:
            if not self.queues[s]:
                self.events[s].clear()
                await self.events[s].wait()
            item = self.queues[s].pop(0)
            if item is None:
                return
            yield item


async def receive_take(actor, s: int, delays: list) -> int:
    n = 0
    while True:
        batch = await actor.take.remote(s, 0.25, 0.01)
        for item in batch:
            if item is None:
                return n
            delays.append(time.monotonic() - item[0])
            np.array(item[1])  # out of the object store, as the gateway does
            n += 1


async def receive_stream(actor, s: int, delays: list) -> int:
    n = 0
    async for ref in actor.stream.remote(s):
        made, img = await ref
        delays.append(time.monotonic() - made)
        np.array(img)
        n += 1
    return n


async def run(mode: str, streams: int, seconds: float) -> dict:
    import ray

    actor = ray.remote(Source).options(num_cpus=1).remote()
    pid = await actor.pid.remote()
    d0, a0 = time.process_time(), cpu_seconds(pid)
    await actor.start.remote(streams, seconds)
    delays: list = []
    receive = receive_take if mode == "take" else receive_stream
    frames = sum(await asyncio.gather(*(receive(actor, s, delays) for s in range(streams))))
    d1, a1 = time.process_time(), cpu_seconds(pid)
    ray.kill(actor)
    return {"mode": mode, "streams": streams, "frames": frames,
            "driver_cpu_ms_per_frame": round(1000 * (d1 - d0) / frames, 3),
            "actor_cpu_ms_per_frame": round(1000 * (a1 - a0) / frames, 3),
            "delay_mean_ms": round(1000 * float(np.mean(delays)), 2),
            "delay_p95_ms": round(1000 * float(np.percentile(delays, 95)), 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--streams", default="1,4")
    a = p.parse_args()
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    ray.init(num_cpus=2, object_store_memory=256 * 1024 * 1024, include_dashboard=False, log_to_driver=False)
    results = []
    for streams in (int(x) for x in a.streams.split(",")):
        for mode in ("take", "stream"):
            results.append(asyncio.run(run(mode, streams, a.seconds)))
    ray.shutdown()
    print(json.dumps({"frame": f"{SIZE}x{SIZE} RGB", "ray": ray.__version__, "results": results}, indent=1))


if __name__ == "__main__":
    main()
