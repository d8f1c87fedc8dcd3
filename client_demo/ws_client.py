"""Websocket client: PCM16 in, JPEG frames + the exact audio they were made from out (docs/protocol.md).

One coroutine runs a whole session: hello/ready, a sender paced by the audio source, a receiver that
decodes frames into a sink, then `end_of_speech` and a wait until the sent speech has come back
(every frame that consumed input carries a latency, so the client can count them).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import aiohttp
import cv2
import numpy as np

from model.timebase import SAMPLE_RATE

from .audio_source import AudioSource
from .protocol import (
    AudioFormat,
    FrameMessage,
    ProtocolError,
    audio_message,
    build_hello,
    parse_frame_message,
)
from .sinks import FrameSink, SinkThread
from .summary import RunOptions, RunSummary

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 15.0
FAST_AHEAD_S = 4.0  # --fast keeps at most this much speech queued at the server (its buffer is ~10 s)


class ServerError(RuntimeError):
    """The server refused or ended the session; `code` is the protocol's error code when known."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class _Receiver:
    """Consumes server messages: frames into the sink and the counters, JSON into the summary."""

    def __init__(self, summary: RunSummary, sink: FrameSink | None, samples_per_frame: int, rate: int) -> None:
        self.summary = summary
        self.sink = sink
        self.worker = SinkThread("ws-sink") if sink is not None else None
        self.last_index = -1
        self.last_consumed_at = time.monotonic()
        self.window_s = 0.0
        self.spf = samples_per_frame
        self.rate = rate
        self.consumed_samples = 0  # 16 kHz input samples the returned frames were made from
        self.progress = asyncio.Event()
        self.state = ""
        self.interrupt_mark = 0

    def on_binary(self, data: bytes) -> None:
        msg = parse_frame_message(data, self.spf)
        s = self.summary
        s.frame_received()
        s.speech_frames += msg.speech
        s.filler_frames += msg.filler
        skipped = max(0, msg.index - self.last_index - 1) if self.last_index >= 0 else 0
        s.missing_frames += skipped
        self.last_index = max(self.last_index, msg.index)
        if msg.latency_s is None and msg.speech:
            s.padded_frames += 1  # a speech window flushed before all its audio came: padded with silence
        if msg.latency_s is not None:
            s.latencies.append(msg.latency_s)
            self.consumed_samples += self.spf
            self.last_consumed_at = time.monotonic()
        s.audio_samples += len(msg.pcm) // 2
        if self.worker is not None:
            self.worker.call(self._deliver, msg, skipped)
        self.progress.set()

    def _deliver(self, msg: FrameMessage, skipped: int) -> None:
        """Sink thread: decode the JPEG and hand image + audio on. Frames the server skipped (it drops
        them for clients that read too slowly) become silence, so the audio stays aligned with the pts."""
        assert self.sink is not None
        if skipped:
            self.sink.audio(np.zeros(skipped * self.spf, np.int16), self.rate)
        bgr = cv2.imdecode(np.frombuffer(msg.jpeg, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ProtocolError(f"frame {msg.index}: the JPEG payload does not decode")
        self.sink.audio(np.frombuffer(msg.pcm, "<i2"), self.rate)
        self.sink.video(msg.index, bgr[:, :, ::-1])

    def on_json(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "state":
            self.state = str(msg.get("state", ""))
            self.summary.add_state(self.state)
        elif kind == "stats" and msg.get("state"):
            self.state = str(msg["state"])
            self.summary.add_state(self.state)
        elif kind == "error":
            log.error("server error: %s: %s", msg.get("code"), msg.get("message"))
            self.summary.errors.append({"code": msg.get("code"), "message": msg.get("message")})
        elif kind == "warning":
            log.warning("server warning: %s", msg.get("code"))
            self.summary.warnings.append({"code": msg.get("code"), "message": msg.get("message")})
        self.progress.set()

    async def run(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for m in ws:
            if m.type == aiohttp.WSMsgType.BINARY:
                self.on_binary(m.data)
            elif m.type == aiohttp.WSMsgType.TEXT:
                self.on_json(json.loads(m.data))
            elif m.type == aiohttp.WSMsgType.ERROR:
                log.error("websocket error: %s", ws.exception())
                break
        self.progress.set()


async def _await_ready(ws: aiohttp.ClientWebSocketResponse, summary: RunSummary) -> dict[str, Any]:
    try:
        m = await ws.receive(timeout=READY_TIMEOUT_S)
    except asyncio.TimeoutError as exc:
        raise ServerError("timeout", f"no 'ready' from the server within {READY_TIMEOUT_S:.0f} s") from exc
    if m.type != aiohttp.WSMsgType.TEXT:
        code = ws.close_code
        summary.close_code = code
        raise ServerError("closed", f"server closed the websocket before 'ready' (close code {code})")
    msg = json.loads(m.data)
    if msg.get("type") == "error":
        summary.errors.append({"code": msg.get("code"), "message": msg.get("message")})
        raise ServerError(str(msg.get("code")), str(msg.get("message")))
    if msg.get("type") != "ready":
        raise ServerError("protocol", f"expected 'ready' as the first message, got {msg.get('type')!r}")
    summary.backend = str(msg.get("backend", ""))
    summary.backend_description = str(msg.get("backend_description", ""))
    summary.session_id = str(msg.get("session_id", ""))
    summary.width, summary.height = int(msg.get("width", 0)), int(msg.get("height", 0))
    summary.audio_rate = int(msg.get("sample_rate", SAMPLE_RATE))
    return msg


async def _wait_until(predicate, progress: asyncio.Event, deadline: float, stall_s: float) -> bool:  # noqa: ANN001
    """Wait for `predicate()`; give up at `deadline` or after `stall_s` without any message."""
    last = time.monotonic()
    while not predicate():
        now = time.monotonic()
        if now >= deadline or now - last >= stall_s:
            return False
        progress.clear()
        try:
            await asyncio.wait_for(progress.wait(), min(0.2, deadline - now))
            last = time.monotonic()
        except asyncio.TimeoutError:
            pass
    return True


async def run_websocket(
    source: AudioSource,
    sink: FrameSink | None,
    opts: RunOptions,
    http: aiohttp.ClientSession | None = None,
) -> RunSummary:
    """Stream `source` to the server over /ws and feed what comes back to `sink`; returns the counters."""
    summary = RunSummary(transport="ws")
    own_http = http is None
    http = http or aiohttp.ClientSession()
    try:
        try:
            ws = await http.ws_connect(opts.ws_url(), headers=opts.auth_headers(), max_msg_size=64 << 20, heartbeat=None)
        except aiohttp.WSServerHandshakeError as exc:
            raise ServerError(f"http_{exc.status}", f"websocket refused by {opts.ws_url()}: {exc.message}") from exc
        async with ws:
            fmt = AudioFormat(source.sample_rate, 1, "s16")
            await ws.send_json(build_hello(opts.avatar, fmt, opts.speakers, opts.jpeg_quality))
            ready = await _await_ready(ws, summary)
            spf = int(ready.get("samples_per_frame", summary.audio_rate // int(ready.get("fps", 25))))
            rx = _Receiver(summary, sink, spf, summary.audio_rate)
            rx.window_s = int(ready.get("window_frames", 0)) / int(ready.get("fps", 25))
            rx_task = asyncio.create_task(rx.run(ws), name="ws-receiver")
            try:
                sent = await _send_audio(ws, source, opts, summary, rx)
                await _drain(ws, opts, summary, rx, rx_task, sent)
                if not ws.closed:
                    await ws.send_json({"type": "bye"})
                    await asyncio.wait_for(ws.close(), 5)
                await asyncio.wait_for(rx_task, 5)
            finally:
                if not rx_task.done():
                    rx_task.cancel()
                    await asyncio.gather(rx_task, return_exceptions=True)
                if rx.worker is not None:
                    await asyncio.to_thread(rx.worker.join)
            summary.close_code = ws.close_code
    finally:
        if own_http:
            await http.close()
    return summary


async def _send_audio(
    ws: aiohttp.ClientWebSocketResponse, source: AudioSource, opts: RunOptions, summary: RunSummary, rx: _Receiver
) -> int:
    """Send the source's chunks; returns how many 16 kHz-equivalent samples were sent."""
    rate = source.sample_rate
    sent = 0
    async for chunk in source.chunks():
        if ws.closed:
            break
        if opts.fast:
            while (sent - rx.consumed_samples * rate / SAMPLE_RATE) / rate > FAST_AHEAD_S and not ws.closed:
                rx.progress.clear()
                try:
                    await asyncio.wait_for(rx.progress.wait(), 0.1)
                except asyncio.TimeoutError:
                    pass
        await ws.send_bytes(audio_message(np.ascontiguousarray(chunk, "<i2").tobytes(), opts.speaker_id))
        sent += chunk.size
        summary.audio_sent_s = sent / rate
        if opts.interrupt_after is not None and summary.audio_sent_s >= opts.interrupt_after:
            rx.interrupt_mark = len(summary.states)
            await ws.send_json({"type": "interrupt"})
            summary.interrupted = True
            log.info("interrupt sent after %.2f s of audio", summary.audio_sent_s)
            break
        if opts.seconds is not None and summary.audio_sent_s >= opts.seconds:
            break
    return round(sent * SAMPLE_RATE / rate)


async def _drain(
    ws: aiohttp.ClientWebSocketResponse, opts: RunOptions, summary: RunSummary, rx: _Receiver,
    rx_task: asyncio.Task, sent_16k: int,
) -> None:
    """Wait until the sent speech has come back as frames (or the session is idle after an interrupt)."""
    deadline = time.monotonic() + opts.timeout_s
    if summary.interrupted:
        ok = await _wait_until(
            lambda: summary.idle_after_interrupt(rx.interrupt_mark) or rx_task.done(), rx.progress, deadline, 5
        )
        if not ok:
            log.warning("no return to idle seen after the interrupt (state %r)", rx.state)
    else:
        if not ws.closed:
            await ws.send_json({"type": "end_of_speech"})
        # Done when every sent frame came back, or when speech frames stopped coming for a while (the
        # last partial frame may come back without a latency, or the server dropped frames).
        quiet_s = max(1.0, 2 * rx.window_s)
        ok = await _wait_until(
            lambda: rx.consumed_samples >= sent_16k - rx.spf or rx_task.done()
            or (rx.state == "idle" and time.monotonic() - rx.last_consumed_at > quiet_s),
            rx.progress, deadline, 5,
        )
        if not ok:
            log.warning("only %d of %d sent samples came back before the timeout", rx.consumed_samples, sent_16k)
    end = time.monotonic() + opts.tail_s
    await _wait_until(lambda: time.monotonic() >= end or rx_task.done(), rx.progress, end + 1, opts.tail_s + 1)
