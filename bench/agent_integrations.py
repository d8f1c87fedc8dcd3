"""Benchmark: what each voice-agent integration adds over a plain websocket client, and what the
pipecat service costs per frame.

The server runs in a subprocess (`infinitetalk-live serve`, lite backend, built-in avatar 512x512),
so this process's CPU time is the client side only. Per trial a new session idles for 10 frames,
then gets a 2 s utterance at once (generated speech, as a TTS gives it) and plays it out. Three
clients, alternating in one run: `AvatarLink` alone (the plain websocket client: receive, decode
the JPEG), the pipecat service in a real pipeline (a capturing sink after it), and the LiveKit
`VideoGenerator` iterated directly (the `AvatarRunner` and the room cannot run here). Measured:
first avatar frame carrying the speech after the first audio byte (the pipecat figure at the sink
after the service, the TTS frame entering right after the 10th frame as in the others; the LiveKit figure as the generator yields its `rtc.AudioFrame`), and this
process's CPU ms and bytes received per frame over the trial. Prints one JSON object (~1 min).

    PYTHONPATH=. python bench/agent_integrations.py [--trials 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import numpy as np
from agent_latency import read_speech, server  # the same utterance and server (this script's folder)

from model.timebase import SAMPLE_RATE

LOUD = 200  # a frame "carries the speech" when its audio gets this loud (the utterance starts loud)


def loud(pcm: bytes | np.ndarray) -> bool:
    x = np.frombuffer(pcm, np.int16) if isinstance(pcm, (bytes, memoryview)) else pcm
    return bool(np.abs(x.astype(np.int32)).max() > LOUD)


class Trial:
    """CPU and bytes per frame over a trial, and the first-frame latency."""

    def __init__(self) -> None:
        self.cpu0 = time.process_time()
        self.sent_at: float | None = None
        self.first_s: float | None = None
        self.frames = 0

    def frame(self, carries_speech: bool) -> None:
        self.frames += 1
        if carries_speech and self.first_s is None and self.sent_at is not None:
            self.first_s = time.monotonic() - self.sent_at

    def result(self, nbytes: int) -> dict:
        return {"first_ms": 1000 * (self.first_s or float("nan")),
                "cpu_ms_per_frame": 1000 * (time.process_time() - self.cpu0) / self.frames,
                "bytes_per_frame": nbytes / self.frames}


async def plain(url: str, speech: np.ndarray) -> dict:
    from client_demo.agents.avatar_link import AvatarFrame, AvatarLink

    link = AvatarLink(url)
    await link.open()
    trial = Trial()
    try:
        async for item in link.receive():
            if isinstance(item, AvatarFrame):
                trial.frame(loud(item.pcm))
                if trial.frames == 10:
                    trial.sent_at = time.monotonic()
                    await link.send_audio(speech.tobytes())
                    await link.end_segment()
            elif item["type"] == "playback_finished":
                break
    finally:
        await link.close()
    return trial.result(link.bytes_received)


async def pipecat(url: str, speech: np.ndarray) -> dict:
    from pipecat.frames.frames import (
        Frame,
        OutputAudioRawFrame,
        StartFrame,
        TTSAudioRawFrame,
        TTSStoppedFrame,
    )
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
    from pipecat.tests.utils import SleepFrame, run_test

    from client_demo.agents.pipecat_avatar import InfiniteTalkVideoService

    trial = Trial()
    tenth = asyncio.Event()

    class Sink(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            if isinstance(frame, OutputAudioRawFrame):
                trial.frame(loud(frame.audio))
                if trial.frames == 10:
                    tenth.set()
            await self.push_frame(frame, direction)

    class Tts(FrameProcessor):  # before the service: the TTS output, right after the 10th frame (as the others)
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            await self.push_frame(frame, direction)
            if isinstance(frame, StartFrame):
                self.create_task(self._speak(), "tts")

        async def _speak(self) -> None:
            await tenth.wait()
            trial.sent_at = time.monotonic()
            await self.push_frame(TTSAudioRawFrame(audio=speech.tobytes(), sample_rate=SAMPLE_RATE, num_channels=1))
            await self.push_frame(TTSStoppedFrame())

    service = InfiniteTalkVideoService(url=url)
    await run_test(Pipeline([Tts(), service, Sink()]), frames_to_send=[SleepFrame(1.5)], start_timeout=10.0)
    return trial.result(service.avatar_link.bytes_received)


async def livekit(url: str, speech: np.ndarray) -> dict:
    from livekit import rtc
    from livekit.agents.voice.avatar import AudioSegmentEnd

    from client_demo.agents.livekit_avatar import InfiniteTalkVideoGenerator

    gen = InfiniteTalkVideoGenerator(url)
    await gen.start()
    trial = Trial()
    try:
        async for item in gen:
            if isinstance(item, rtc.VideoFrame):
                trial.frames += 1
                if trial.frames == 10:
                    trial.sent_at = time.monotonic()
                    await gen.push_audio(rtc.AudioFrame(speech.tobytes(), SAMPLE_RATE, 1, speech.size))
                    await gen.push_audio(AudioSegmentEnd())
            elif isinstance(item, rtc.AudioFrame):
                if trial.first_s is None and loud(bytes(item.data.cast("b"))):
                    trial.first_s = time.monotonic() - trial.sent_at
            elif isinstance(item, AudioSegmentEnd):
                break
    finally:
        await gen.aclose()
    return trial.result(gen.link.bytes_received)


def summary(trials: list[dict]) -> dict:
    return {k: round(statistics.median(t[k] for t in trials), 2) for k in trials[0]}


async def run(n: int) -> dict:
    speech = read_speech(2.0)
    results: dict[str, list[dict]] = {"websocket": [], "pipecat": [], "livekit": []}
    clients = {"websocket": plain, "pipecat": pipecat, "livekit": livekit}
    async with server([]) as url:
        for client in clients.values():  # warm-up: imports, first sessions
            await client(url, speech)
        for _ in range(n):
            for name, client in clients.items():
                results[name].append(await client(url, speech))
    med = {name: summary(r) for name, r in results.items()}
    base = med["websocket"]["first_ms"]
    return {
        "bench": "agent_integrations",
        "what": "first avatar frame after the first TTS byte per integration, and client CPU/bytes per frame; "
                "lite backend 512x512 in a server subprocess, loopback",
        "trials": n,
        "median": med,
        "added_latency_ms": {name: round(m["first_ms"] - base, 2) for name, m in med.items() if name != "websocket"},
        "pipecat_cpu_over_websocket": round(med["pipecat"]["cpu_ms_per_frame"] / med["websocket"]["cpu_ms_per_frame"], 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=5)
    args = p.parse_args()
    print(json.dumps(asyncio.run(run(args.trials)), indent=2))


if __name__ == "__main__":
    main()
