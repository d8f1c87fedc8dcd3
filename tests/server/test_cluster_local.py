"""`serve --cluster local:N` as a user runs it: Ray started by the server itself, on loopback only."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys

import aiohttp


async def test_serve_cluster_local_starts_its_own_loopback_ray_serves_and_stops_cleanly(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    log = (tmp_path / "serve.log").open("w")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "serve", "--cluster", "local:1", "--port", "0", "--log-level", "info",
        stdout=asyncio.subprocess.PIPE, stderr=log, env=env)
    try:
        # Generous bounds: on a loaded 2-core machine a local Ray took up to ~2 min to start and stop.
        line = (await asyncio.wait_for(proc.stdout.readline(), 180)).decode()
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
        t0 = asyncio.get_running_loop().time()
        try:
            code = await asyncio.wait_for(proc.wait(), 120)
        except TimeoutError:
            code = None
        took = asyncio.get_running_loop().time() - t0
        tail = (tmp_path / "serve.log").read_text()[-3000:]
        assert code == 0, f"serve exit {code} {took:.1f} s after SIGINT; its log ends:\n{tail}"
    finally:
        log.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
