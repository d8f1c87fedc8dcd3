"""A client of this server for voice-agent integrations: generated speech in, avatar frames out.

The pipecat service and the LiveKit avatar worker (docs/agents.md) both talk to the server through
this one class, over the websocket protocol in its generated-speech mode (docs/protocol.md): TTS
audio sent as fast as it comes, one segment per utterance, interrupts, and the frames coming back
at 25 fps, each with the exact 16 kHz audio it was made from and the playback events due with it.
Only aiohttp and OpenCV (the server's own dependencies), so the frameworks stay optional extras.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import cv2
import numpy as np

from client_demo.protocol import AudioFormat, audio_header, build_hello, parse_frame_message
from model.timebase import SAMPLE_RATE


class AvatarLinkError(RuntimeError):
    """The server refused the session or closed it with an error (`code`: the protocol's error code)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass
class AvatarFrame:
    """One output frame. image: RGB uint8 [H, W, 3]; pcm: int16 [640] at 16 kHz, the audio it was made
    from; carries_input: its audio is (partly) the speech sent, not idle silence."""

    index: int
    image: np.ndarray
    pcm: np.ndarray
    carries_input: bool
    jpeg_bytes: int


class AvatarLink:
    """One generated-speech session on the server. `open()`, then `send_audio` / `end_segment` /
    `interrupt` while iterating `receive()`; `end()` plays out what is buffered and closes, `close()`
    closes at once."""

    def __init__(self, url: str, avatar: str | None = None, token: str | None = None, sample_rate: int = SAMPLE_RATE,
                 jpeg_quality: int = 80) -> None:
        self.url = url  # ws://host:port/ws
        self.avatar = avatar
        self.token = token
        self.sample_rate = sample_rate
        self.jpeg_quality = jpeg_quality
        self.ready: dict[str, Any] = {}
        self.last_buffer: dict[str, Any] = {}  # the latest `buffer` message (flow control)
        self.bytes_received = 0
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._header = audio_header(0)

    async def open(self) -> dict[str, Any]:
        """Connect, say hello (generated speech), return the server's `ready`."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._http = aiohttp.ClientSession(headers=headers)
        try:
            self._ws = await self._http.ws_connect(self.url, max_msg_size=0)
            hello = build_hello(self.avatar, AudioFormat(self.sample_rate), jpeg_quality=self.jpeg_quality)
            await self._ws.send_json({**hello, "input": "generated"})
            msg = await asyncio.wait_for(self._ws.receive(), 30)
            data = json.loads(msg.data) if msg.type == aiohttp.WSMsgType.TEXT else {}
            if data.get("type") != "ready":
                raise AvatarLinkError(data.get("code", "closed"), data.get("message", f"no ready: {msg.type}"))
        except BaseException:
            await self.close()
            raise
        self.ready = data
        return data

    @property
    def is_open(self) -> bool:
        return self._ws is not None and not self._ws.closed

    async def send_audio(self, pcm16: bytes) -> None:
        """Mono PCM16 at `sample_rate` (any length; a partial sample is completed by the next call)."""
        if self.is_open and pcm16:
            assert self._ws is not None
            await self._ws.send_bytes(self._header + pcm16)

    async def end_segment(self) -> None:
        await self._send({"type": "segment_end"})

    async def interrupt(self) -> None:
        await self._send({"type": "interrupt"})

    async def _send(self, msg: dict[str, Any]) -> None:
        if self.is_open:
            assert self._ws is not None
            await self._ws.send_json(msg)

    async def receive(self) -> AsyncIterator[AvatarFrame | dict[str, Any]]:
        """What the server sends, in order: frames (25 fps) and the playback events right after the
        frame they belong to; `buffer` messages update `last_buffer`. Ends when the server closes
        (AvatarLinkError when it closed with an error)."""
        assert self._ws is not None, "open() first"
        spf = int(self.ready.get("samples_per_frame", 640))
        error: dict[str, Any] | None = None
        async for msg in self._ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                self.bytes_received += len(msg.data)
                yield decode_frame(msg.data, spf)
            elif msg.type == aiohttp.WSMsgType.TEXT:
                data = json.loads(msg.data)
                kind = data.get("type")
                if kind in ("playback_started", "playback_finished"):
                    yield data
                elif kind == "buffer":
                    self.last_buffer = data
                elif kind == "error":
                    error = data
        if error is not None and self._ws.close_code not in (1000, None):
            raise AvatarLinkError(error["code"], error.get("message", ""))

    async def end(self) -> None:
        """Play out what is buffered, then the server closes (iterate `receive()` meanwhile)."""
        await self._send({"type": "end_session"})

    async def close(self) -> None:
        ws, http = self._ws, self._http
        self._ws = self._http = None
        if ws is not None and not ws.closed:
            try:
                await ws.send_json({"type": "bye"})
            except (ConnectionError, RuntimeError):
                pass
            await ws.close()
        if http is not None:
            await http.close()


def decode_frame(data: bytes, samples_per_frame: int = 640) -> AvatarFrame:
    """A binary frame message -> AvatarFrame (JPEG decoded to RGB)."""
    msg = parse_frame_message(data, samples_per_frame)
    bgr = cv2.imdecode(np.frombuffer(msg.jpeg, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise AvatarLinkError("bad_frame", f"frame {msg.index} is not a decodable JPEG")
    image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return AvatarFrame(msg.index, image, np.frombuffer(msg.pcm, np.int16), msg.latency_s is not None, len(msg.jpeg))
