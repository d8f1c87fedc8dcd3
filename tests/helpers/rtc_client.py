"""A real aiortc client peer for the tests: a paced WAV microphone, recvonly video, a control channel."""

from __future__ import annotations

import asyncio
import fractions
import json
import time

import aiohttp
import av
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

MIC_RATE = 48_000
MIC_CHUNK = 960  # 20 ms


def resample_to_48k(pcm16k: np.ndarray) -> np.ndarray:
    """int16 16 kHz mono -> int16 48 kHz mono (PyAV's resampler)."""
    frame = av.AudioFrame.from_ndarray(pcm16k.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = 16_000
    rs = av.AudioResampler(format="s16", layout="mono", rate=MIC_RATE)
    out = [f.to_ndarray().reshape(-1) for f in rs.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in rs.resample(None)]
    return np.concatenate(out).astype(np.int16)


class WavMicrophone(MediaStreamTrack):
    """Plays `pcm` (int16, 48 kHz) as a microphone, 20 ms per frame paced by the clock, then silence."""

    kind = "audio"

    def __init__(self, pcm: np.ndarray) -> None:
        super().__init__()
        self.pcm = pcm
        self.t0: float | None = None
        self._n = 0

    @property
    def finished(self) -> bool:
        return self._n * MIC_CHUNK >= self.pcm.size

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self.t0 is None:
            self.t0 = time.monotonic()
        due = self.t0 + self._n * MIC_CHUNK / MIC_RATE
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        chunk = self.pcm[self._n * MIC_CHUNK : (self._n + 1) * MIC_CHUNK]
        if chunk.size < MIC_CHUNK:
            chunk = np.concatenate([chunk, np.zeros(MIC_CHUNK - chunk.size, np.int16)])
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = MIC_RATE
        frame.pts = self._n * MIC_CHUNK
        frame.time_base = fractions.Fraction(1, MIC_RATE)
        self._n += 1
        return frame


class RtcTestClient:
    """Connects to `POST /offer`, records what comes back (video frame times, audio, control messages)."""

    def __init__(self, mic: WavMicrophone | None, *more_mics: WavMicrophone) -> None:
        self.pc = RTCPeerConnection()
        self.mic = mic
        self.more_mics = more_mics
        self.messages: list[tuple[float, dict]] = []
        self.video_times: list[float] = []
        self.video_sizes: list[tuple[int, int]] = []
        self.audio_chunks: list[np.ndarray] = []
        self.audio_arrivals: list[float] = []
        self.session_id: str | None = None
        self._tasks: list[asyncio.Task] = []
        self.channel = self.pc.createDataChannel("control")
        self.channel.on("message", lambda m: self.messages.append((time.monotonic(), json.loads(m))))
        self.pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        reader = self._read_video if track.kind == "video" else self._read_audio
        self._tasks.append(asyncio.create_task(reader(track)))

    async def _read_video(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.video_times.append(time.monotonic())
            self.video_sizes.append((frame.width, frame.height))

    async def _read_audio(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.audio_arrivals.append(time.monotonic())
            self.audio_rate = frame.sample_rate
            data = frame.to_ndarray().reshape(-1, len(frame.layout.channels)).mean(axis=1)
            self.audio_chunks.append(data.astype(np.float32) / 32768.0)

    async def connect(self, url: str, **extra) -> dict:
        if self.mic is not None:
            self.pc.addTrack(self.mic)
            for m in self.more_mics:
                self.pc.addTransceiver(m, direction="sendonly")
        else:
            self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.addTransceiver("video", direction="recvonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = {"sdp": self.pc.localDescription.sdp, "type": "offer", **extra}
        async with aiohttp.ClientSession() as http, http.post(url + "/offer", json=offer) as resp:
            body = await resp.json()
            if resp.status != 200:
                return {"status": resp.status, **body}
        self.session_id = body["session_id"]
        await self.pc.setRemoteDescription(RTCSessionDescription(body["sdp"], body["type"]))
        return {"status": 200, **body}

    def send(self, msg: dict) -> None:
        self.channel.send(json.dumps(msg))

    def of_type(self, kind: str) -> list[dict]:
        return [m for _, m in self.messages if m.get("type") == kind]

    async def wait_for(self, predicate, timeout: float) -> None:
        end = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > end:
                raise AssertionError(f"condition not met within {timeout} s")
            await asyncio.sleep(0.02)

    @property
    def audio_t0(self) -> float:
        """When received sample 0 would have arrived had nothing been delayed: min over chunks of
        (arrival - samples received so far / rate); arrivals can only be late, never early."""
        ends = np.cumsum([c.size for c in self.audio_chunks]) / self.audio_rate
        return float(np.min(np.array(self.audio_arrivals) - ends))

    def audio(self) -> np.ndarray:
        return np.concatenate(self.audio_chunks) if self.audio_chunks else np.zeros(0, np.float32)

    async def close(self) -> None:
        await self.pc.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def scripted_call(url: str, wav: str, out: str, lead_s: float, speech_s: float, tail_s: float) -> None:
    """The call the WebRTC end-to-end test makes, run in its own process (as a browser would be):
    play `lead_s` of silence then `speech_s` of the WAV, interrupt, wait for idle, ping, wait
    `tail_s`, hang up. Writes result.json and audio.npy (received audio, mono float32) to `out`."""
    import wave
    from pathlib import Path

    with wave.open(wav) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16)[: int(16000 * speech_s)]
    mic = WavMicrophone(resample_to_48k(np.concatenate([np.zeros(int(16000 * lead_s), np.int16), pcm])))
    client = RtcTestClient(mic)
    result: dict = {}
    try:
        answer = await client.connect(url)
        result["answer"] = {k: v for k, v in answer.items() if k != "sdp"}
        if answer["status"] != 200:
            return
        await client.wait_for(lambda: client.of_type("ready") and client.video_times, 10)
        await client.wait_for(lambda: mic.finished, 15)
        result["t_interrupt"] = time.monotonic()
        client.send({"type": "interrupt"})
        await client.wait_for(lambda: "interrupted" in [m["state"] for m in client.of_type("state")], 3)
        await client.wait_for(lambda: client.of_type("state")[-1]["state"] == "idle", 3)
        result["t_idle"] = time.monotonic()
        client.send({"type": "ping", "t": 7})
        await client.wait_for(lambda: client.of_type("pong"), 3)
        await asyncio.sleep(tail_s)
    finally:
        result.update(
            messages=client.messages, video_times=client.video_times, video_sizes=client.video_sizes,
            mic_t0=mic.t0, audio_t0=client.audio_t0 if client.audio_chunks else None,
            audio_rate=getattr(client, "audio_rate", None), mic_pcm_48k_samples=int(mic.pcm.size),
        )
        np.save(Path(out) / "audio.npy", client.audio())
        np.save(Path(out) / "mic.npy", mic.pcm)
        (Path(out) / "result.json").write_text(json.dumps(result))
        await client.close()


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--wav", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--lead-s", type=float, default=0.5)
    ap.add_argument("--speech-s", type=float, default=3.5)
    ap.add_argument("--tail-s", type=float, default=0.6)
    a = ap.parse_args()
    asyncio.run(scripted_call(a.url, a.wav, a.out, a.lead_s, a.speech_s, a.tail_s))
