"""`serve --cluster local:N` as a user runs it: Ray started by the server itself, on loopback only."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys

import aiohttp


async def test_serve_cluster_local_starts_its_own_loopback_ray_serves_and_stops_cleanly():
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "serve", "--cluster", "local:1", "--port", "0", "--log-level", "warning",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env)
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 120)).decode()
        url = re.search(r"(http://127\.0\.0\.1:\d+)/", line)[1]
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "/api/cluster") as resp:
                workers = (await resp.json())["workers"]
            assert len(workers) == 1 and workers[0]["alive"] and workers[0]["node_ip"] == "127.0.0.1"
            async with http.ws_connect(url.replace("http", "ws") + "/ws") as ws:
                await ws.send_json({"type": "hello", "version": 1})
                ready = await asyncio.wait_for(ws.receive_json(), 30)
                assert ready["type"] == "ready" and ready["backend"] == "lite"
                frames = 0
                while frames < 10:
                    msg = await asyncio.wait_for(ws.receive(), 10)
                    frames += msg.type == aiohttp.WSMsgType.BINARY
                await ws.send_json({"type": "bye"})
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
