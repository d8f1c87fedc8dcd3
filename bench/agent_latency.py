"""Benchmark: the avatar's first frame after the first TTS bytes, generated-speech input vs live input.

A server subprocess (`infinitetalk-live serve`, lite backend and the built-in avatar unless
`--serve` says otherwise; the real websocket protocol on loopback) and one client per trial. Live: the utterance is sent in real time, 20 ms per message,
like a microphone. Generated: the whole utterance at once, as a TTS engine produces it, with
`input: "generated"` and a `segment_end`. Measured per trial: from the first audio byte sent to the
first frame whose audio carries the utterance's first samples. Trials alternate between the modes
in one run; medians and the ratio are printed as one JSON object.

    PYTHONPATH=. python bench/agent_latency.py [--trials 5] [--seconds 2] [--serve "--preset tiny-random"]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import statistics
import sys
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import numpy as np

from model.timebase import SAMPLE_RATE

REPO = Path(__file__).resolve().parents[1]
SPEECH = REPO.parent / "shared" / "audio" / "speech_en1.wav"
HEADER = bytes([0x41, 1, 0, 0])


def read_speech(seconds: float) -> np.ndarray:
    """int16 speech starting at its first non-silent sample (so 'first frame carrying it' is clear)."""
    with wave.open(str(SPEECH)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    start = int(np.flatnonzero(np.abs(pcm) > 200)[0])
    return pcm[start : start + int(seconds * SAMPLE_RATE)].copy()


@contextlib.asynccontextmanager
async def server(serve_args: list[str]) -> AsyncIterator[str]:
    """`infinitetalk-live serve ARGS` in a subprocess on 127.0.0.1 (so this process's CPU time is the
    client's); yields the websocket URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "serve", "--port", str(port), "--log-level", "warning",
        "--rate-burst", "1000", *serve_args, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.DEVNULL)
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(600):
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                        if r.status == 200:
                            break
                if proc.returncode is not None:
                    raise RuntimeError(f"the server exited ({proc.returncode})")
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("the server did not start")
        yield f"ws://127.0.0.1:{port}/ws"
    finally:
        proc.terminate()
        await proc.wait()


async def first_frame_s(ws_url: str, speech: np.ndarray, generated: bool) -> float:
    """Seconds from the first audio byte sent to the first frame carrying the speech."""
    from server.ws_protocol import unpack_frame

    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url) as ws:
        hello = {"type": "hello", "version": 1, **({"input": "generated"} if generated else {})}
        await ws.send_json(hello)
        while (await ws.receive_json())["type"] != "ready":
            pass
        for _ in range(10):  # let the session settle into idle windows first
            while (await ws.receive()).type != aiohttp.WSMsgType.BINARY:
                pass
        sent_at: list[float] = []

        async def send() -> None:
            sent_at.append(loop.time())
            if generated:
                await ws.send_bytes(HEADER + speech.tobytes())
                await ws.send_json({"type": "segment_end"})
                return
            for i in range(0, speech.size, 320):
                await asyncio.sleep(max(0.0, sent_at[0] + i / SAMPLE_RATE - loop.time()))
                await ws.send_bytes(HEADER + speech[i : i + 320].tobytes())

        sender = asyncio.create_task(send())
        try:
            while True:
                msg = await asyncio.wait_for(ws.receive(), 10)
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    raise RuntimeError(f"the server closed the websocket: {msg.data} {msg.extra}")
                if msg.type == aiohttp.WSMsgType.BINARY and np.abs(unpack_frame(msg.data).pcm.astype(np.int32)).max() > 200:
                    return loop.time() - sent_at[0]
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            await ws.send_json({"type": "bye"})


async def run(trials: int, seconds: float, serve_args: list[str]) -> dict:
    speech = read_speech(seconds)
    live: list[float] = []
    gen: list[float] = []
    async with server(serve_args) as url:
        await first_frame_s(url, speech, True)  # warm-up (first session: imports, caches)
        for _ in range(trials):
            live.append(await first_frame_s(url, speech, False))
            gen.append(await first_frame_s(url, speech, True))
    ms = [round(x * 1000, 1) for x in live], [round(x * 1000, 1) for x in gen]
    return {
        "bench": "agent_latency",
        "what": "first avatar frame after the first TTS byte, websocket, loopback",
        "server": ["serve", *serve_args],
        "trials": trials,
        "utterance_s": seconds,
        "live_ms": ms[0],
        "generated_ms": ms[1],
        "live_median_ms": round(statistics.median(live) * 1000, 1),
        "generated_median_ms": round(statistics.median(gen) * 1000, 1),
        "generated_over_live": round(statistics.median(gen) / statistics.median(live), 3),
        "machine": platform.machine(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--seconds", type=float, default=2.0, help="length of the utterance")
    p.add_argument("--serve", default="", help='arguments for the server, e.g. "--preset tiny-random" (default: lite)')
    args = p.parse_args()
    print(json.dumps(asyncio.run(run(args.trials, args.seconds, args.serve.split())), indent=2))


if __name__ == "__main__":
    main()
