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

    def __init__(self, mic: WavMicrophone | None) -> None:
        self.pc = RTCPeerConnection()
        self.mic = mic
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
