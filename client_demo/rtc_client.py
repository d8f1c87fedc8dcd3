"""WebRTC client (aiortc): the microphone/file as an audio track, the avatar back as video + delayed audio.

Signalling is one `POST /offer` (docs/protocol.md); control and stats travel on the `control`
data channel. After the speech is sent the track keeps sending silence, as a muted microphone
would, until the server reports it is idle again with nothing buffered.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from model.timebase import VIDEO_FPS

from .audio_source import AudioSource
from .sinks import FrameSink, SinkThread
from .summary import RunOptions, RunSummary
from .ws_client import ServerError

log = logging.getLogger(__name__)

CHUNK_S = 0.02


class SourceTrack(MediaStreamTrack):
    """An audio track fed by an `AudioSource`; silence (paced in real time) once the source ends or is muted."""

    kind = "audio"

    def __init__(self, source: AudioSource) -> None:
        super().__init__()
        self.rate = source.sample_rate
        self._chunks: AsyncIterator[np.ndarray] | None = source.chunks()
        self._pts = 0
        self._t0: float | None = None
        self.sent_samples = 0
        self.source_done = asyncio.Event()

    def mute(self) -> None:
        """Stop taking audio from the source (after an interrupt or the time limit)."""
        self._chunks = None
        self.source_done.set()

    async def _silence(self, n: int) -> np.ndarray:
        assert self._t0 is not None
        due = self._t0 + self._pts / self.rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        return np.zeros(n, np.int16)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._t0 is None:
            self._t0 = time.monotonic()
        n = int(self.rate * CHUNK_S)
        chunk: np.ndarray | None = None
        if self._chunks is not None:
            try:
                chunk = await self._chunks.__anext__()
                self.sent_samples += chunk.size
            except StopAsyncIteration:
                self.mute()
        if chunk is None:
            chunk = await self._silence(n)
        frame = av.AudioFrame(format="s16", layout="mono", samples=chunk.size)
        frame.planes[0].update(np.ascontiguousarray(chunk, np.int16).tobytes())
        frame.sample_rate = self.rate
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, self.rate)
        self._pts += chunk.size
        return frame


class _Peer:
    """State shared by the track consumers and the data channel handler."""

    def __init__(self, summary: RunSummary, sink: FrameSink | None, fps: int = VIDEO_FPS) -> None:
        self.summary = summary
        self.sink = sink
        self.worker = SinkThread("rtc-sink") if sink is not None else None
        self.fps = fps
        self.window_s = 0.0
        self.state = ""
        self.buffered_s = 0.0
        self.ready = asyncio.Event()
        self.progress = asyncio.Event()
        self.failed = asyncio.Event()
        self._t0: float | None = None
        self._last_index = -1

    def on_message(self, raw: str | bytes) -> None:
        msg: dict[str, Any] = json.loads(raw)
        kind = msg.get("type")
        s = self.summary
        if kind == "ready":
            s.backend = str(msg.get("backend", ""))
            s.backend_description = str(msg.get("backend_description", ""))
            s.session_id = str(msg.get("session_id", s.session_id))
            s.width, s.height = int(msg.get("width", 0)), int(msg.get("height", 0))
            self.fps = int(msg.get("fps", self.fps))
            self.window_s = int(msg.get("window_frames", 0)) / self.fps
            self.ready.set()
        elif kind in ("state", "stats"):
            self.state = str(msg.get("state", self.state))
            s.add_state(self.state)
            if kind == "stats":
                self.buffered_s = float(msg.get("buffered_speech_s") or 0.0)
                s.filler_frames = int(msg.get("filler_frames") or 0)
                if msg.get("latency_s") is not None:
                    s.latencies.append(float(msg["latency_s"]))
        elif kind == "error":
            log.error("server error: %s: %s", msg.get("code"), msg.get("message"))
            s.errors.append({"code": msg.get("code"), "message": msg.get("message")})
        elif kind == "warning":
            log.warning("server warning: %s: %s", msg.get("code"), msg.get("message"))
            s.warnings.append({"code": msg.get("code"), "message": msg.get("message")})
        self.progress.set()

    async def consume_video(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            t = float(frame.pts * frame.time_base) if frame.pts is not None else time.monotonic()
            if self._t0 is None:
                self._t0 = t
            index = max(round((t - self._t0) * self.fps), self._last_index + 1)
            self._last_index = index
            self.summary.frame_received()
            if self.worker is not None:
                self.worker.call(self._deliver_video, index, frame)
            self.progress.set()

    def _deliver_video(self, index: int, frame: av.VideoFrame) -> None:
        assert self.sink is not None
        self.sink.video(index, frame.to_ndarray(format="rgb24"))

    async def consume_audio(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.summary.audio_rate = frame.sample_rate
            self.summary.audio_samples += frame.samples
            if self.worker is not None:
                self.worker.call(self._deliver_audio, frame)

    def _deliver_audio(self, frame: av.AudioFrame) -> None:
        assert self.sink is not None
        channels = len(frame.layout.channels)
        pcm = frame.to_ndarray()
        pcm = pcm.reshape(channels, -1).T if frame.format.is_planar else pcm.reshape(-1, channels)
        if pcm.dtype != np.int16:
            pcm = (np.clip(pcm, -1, 1) * 32767).astype(np.int16)
        self.sink.audio(pcm if channels > 1 else pcm[:, 0], frame.sample_rate)


async def _post_offer(http: aiohttp.ClientSession, opts: RunOptions, offer: RTCSessionDescription) -> dict[str, Any]:
    body: dict[str, Any] = {"sdp": offer.sdp, "type": offer.type, "speakers": opts.speakers}
    if opts.avatar:
        body["avatar"] = opts.avatar
    async with http.post(opts.http_url("/offer"), json=body, headers=opts.auth_headers()) as resp:
        try:
            data = await resp.json(content_type=None)
        except (json.JSONDecodeError, aiohttp.ContentTypeError):
            data = {}
        if resp.status != 200:
            err = data.get("error", {}) if isinstance(data, dict) else {}
            raise ServerError(str(err.get("code", f"http_{resp.status}")), str(err.get("message", resp.reason)))
        return data


async def _hang_up(http: aiohttp.ClientSession, opts: RunOptions, offer_id: str) -> None:
    """Tell the server the call is over (frees its session slot at once, even before ICE completed).

    Best effort: a server that closed the session already answers 404, one that is gone does not answer."""
    try:
        async with http.delete(opts.http_url(f"/offer/{offer_id}"), headers=opts.auth_headers(),
                               timeout=aiohttp.ClientTimeout(total=3)) as resp:
            log.debug("hang-up: HTTP %d", resp.status)
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        log.debug("hang-up not delivered: %r", exc)


async def run_webrtc(
    source: AudioSource,
    sink: FrameSink | None,
    opts: RunOptions,
    http: aiohttp.ClientSession | None = None,
) -> RunSummary:
    """Stream `source` to the server over WebRTC and feed the returned video/audio to `sink`."""
    if opts.speakers != 1:
        raise ValueError("this client sends one microphone track; use the websocket transport for several speakers")
    summary = RunSummary(transport="webrtc")
    peer = _Peer(summary, sink)
    pc = RTCPeerConnection()
    track = SourceTrack(source)
    consumers: list[asyncio.Task] = []
    own_http = http is None
    http = http or aiohttp.ClientSession()
    offer_id = ""
    try:
        pc.addTrack(track)
        pc.addTransceiver("video", direction="recvonly")
        channel = pc.createDataChannel("control")
        channel.on("message", peer.on_message)

        @pc.on("track")
        def on_track(remote: MediaStreamTrack) -> None:
            consume = peer.consume_video if remote.kind == "video" else peer.consume_audio
            consumers.append(asyncio.create_task(consume(remote), name=f"rtc-{remote.kind}"))

        @pc.on("connectionstatechange")
        def on_state() -> None:
            log.info("peer connection %s", pc.connectionState)
            if pc.connectionState in ("failed", "closed"):
                peer.failed.set()
                peer.progress.set()

        await pc.setLocalDescription(await pc.createOffer())
        answer = await _post_offer(http, opts, pc.localDescription)
        summary.session_id = offer_id = str(answer.get("session_id", ""))
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        await _drive(pc, channel, track, peer, opts)
    finally:
        await pc.close()
        if offer_id:
            await _hang_up(http, opts, offer_id)
        for t in consumers:
            t.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)
        if peer.worker is not None:
            await asyncio.to_thread(peer.worker.join)
        if own_http:
            await http.close()
    return summary


async def _wait(peer: _Peer, predicate, timeout: float) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        left = deadline - time.monotonic()
        if left <= 0 or peer.failed.is_set():
            return False
        peer.progress.clear()
        try:
            await asyncio.wait_for(peer.progress.wait(), min(left, 0.2))
        except asyncio.TimeoutError:
            pass
    return True


async def _drive(pc: RTCPeerConnection, channel: Any, track: SourceTrack, peer: _Peer, opts: RunOptions) -> None:
    """Follow the session: limits, interrupt, then wait for the speech to have played."""
    summary = peer.summary
    if not await _wait(peer, peer.ready.is_set, 15):
        raise ServerError("timeout", f"no 'ready' on the data channel within 15 s (connection {pc.connectionState})")
    limit = min(x for x in (opts.seconds, opts.interrupt_after, float("inf")) if x is not None)
    while not track.source_done.is_set() and not peer.failed.is_set():
        summary.audio_sent_s = track.sent_samples / track.rate
        if summary.audio_sent_s >= limit:
            track.mute()
            break
        await asyncio.sleep(0.02)
    summary.audio_sent_s = track.sent_samples / track.rate
    if opts.interrupt_after is not None and summary.audio_sent_s >= opts.interrupt_after - 0.05:
        mark = len(summary.states)
        channel.send(json.dumps({"type": "interrupt"}))
        summary.interrupted = True
        ok = await _wait(peer, lambda: summary.idle_after_interrupt(mark), opts.timeout_s)
    else:
        # Speech sent last comes back about one latency later; the track keeps sending silence after
        # it, so up to one window of that silence may still sit in the server's buffer.
        done_at = time.monotonic()
        margin = peer.window_s + 1.5 / peer.fps

        def played() -> bool:
            # Without a measured latency yet (no stats), wait a conservative 3 s instead.
            wait_s = summary.latencies[-1] + 2 / peer.fps if summary.latencies else 3.0
            return peer.state == "idle" and peer.buffered_s <= margin and time.monotonic() >= done_at + wait_s

        ok = await _wait(peer, played, opts.timeout_s)
    if not ok:
        log.warning("session did not return to idle in time (state %r, %.2f s buffered)", peer.state, peer.buffered_s)
    await asyncio.sleep(opts.tail_s)
