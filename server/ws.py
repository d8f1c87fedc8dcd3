"""Websocket transport `/ws`: hello/ready, binary audio in, JPEG + PCM frames out, JSON control.

Backpressure: frames go through a bounded per-connection queue drained by one sender task. A
client that stops reading fills it; further frames are dropped (counted) and, once a send has
been stuck for `ws_stall_timeout_s`, the connection is closed with 4408: the `error` and the close
frame go out behind the frames already in the socket buffers, and the connection is kept for
`ws_close_linger_s`, so a client that reads again gets them (see `close`). Every protocol error
becomes an `error` message and a close code; nothing a client sends can raise out of here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from typing import Any

from aiohttp import WSMsgType, web

from streaming.audio_fifo import AudioOverflow
from streaming.audio_input import AudioFormatError
from streaming.session import Session, SessionError, SessionState

from . import messages
from .avatars import AvatarError, validate_name
from .context import ServerContext, context_of
from .errors import ApiError
from .security import WS_SUBPROTOCOL, offered_protocols, without_foreign_protocols
from .sessions import TooManySessions
from .ws_protocol import (
    AUDIO_HEADER,
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_PROTOCOL,
    CLOSE_SESSION_FAILED,
    CLOSE_TIMEOUT,
    CLOSE_TOO_MANY,
    CLOSE_UNKNOWN_AVATAR,
    Hello,
    ProtocolError,
    check_text_size,
    pack_frame,
    parse_audio,
    parse_hello,
    parse_json_message,
)

log = logging.getLogger(__name__)

TRANSPORT = "websocket"
MAX_QUEUED_JSON = 256


class _Close(Exception):
    def __init__(self, code: int, error: dict[str, Any] | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.error = error


class OutQueue:
    """Outgoing messages in order; at most `max_frames` binary frames waiting (then put_frame refuses)."""

    def __init__(self, max_frames: int) -> None:
        self.max_frames = max_frames
        self._items: deque[bytes | str] = deque()
        self._frames = 0
        self._json = 0
        self._ready = asyncio.Event()

    def put_frame(self, data: bytes) -> bool:
        if self._frames >= self.max_frames:
            return False
        self._items.append(data)
        self._frames += 1
        self._ready.set()
        return True

    def put_json(self, msg: dict[str, Any]) -> bool:
        if self._json >= MAX_QUEUED_JSON:
            return False
        self._items.append(json.dumps(msg))
        self._json += 1
        self._ready.set()
        return True

    async def get(self) -> bytes | str:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        item = self._items.popleft()
        if isinstance(item, bytes):
            self._frames -= 1
        else:
            self._json -= 1
        return item


async def handle_ws(request: web.Request) -> web.StreamResponse:
    ctx = context_of(request)
    if ctx.stopping:
        raise ApiError(503, "stopping", "the server is shutting down")
    protocols = (WS_SUBPROTOCOL,) if WS_SUBPROTOCOL in offered_protocols(request) else ()
    ws = web.WebSocketResponse(max_msg_size=4 * ctx.config.ws_max_message_bytes, autoping=True, heartbeat=30.0,
                               protocols=protocols)
    await ws.prepare(without_foreign_protocols(request))
    conn = WsConnection(ctx, ws, request)
    await conn.run()
    return ws


class WsConnection:
    def __init__(self, ctx: ServerContext, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.ctx = ctx
        self.ws = ws
        self.request = request
        self.client = ctx.security.owner(request)  # the per-client session cap counts per owner
        self.session: Session | None = None
        self.hello: Hello | None = None
        self.out = OutQueue(ctx.config.ws_send_queue_frames)
        self.text_limit = ctx.config.ws_max_message_bytes - AUDIO_HEADER.size  # 1 MiB, as for PCM
        self.frames_sent = 0
        self.frames_dropped = 0
        self._send_since: float | None = None  # when the send in flight started
        self._tasks: list[asyncio.Task] = []
        self._closing = False
        self._slot_held = False
        self._overflow_reported = 0.0
        self._close_request: tuple[int, dict[str, Any] | None] | None = None
        self._close_requested = asyncio.Event()
        self._done = asyncio.Event()
        self._reading = False

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        """Handshake, then read until the client leaves or something asks to close.

        Background closes (session failure, stalled client, shutdown) are handed to this
        coroutine: it stops reading first, so aiohttp's close handshake can wait for the
        client's close frame instead of dropping the connection.
        """
        ctx = self.ctx
        ctx.connections.add(self)
        ctx.metrics.connections.labels(TRANSPORT).inc()
        try:
            await self._open()
            self._reading = True
            reader = asyncio.create_task(self._read_loop(), name="ws-reader")
            requested = asyncio.create_task(self._close_requested.wait())
            await asyncio.wait({reader, requested}, return_when=asyncio.FIRST_COMPLETED)
            requested.cancel()
            if not reader.done():
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
                await self.close(*self._close_request)
            else:
                reader.result()  # re-raises _Close / ProtocolError from the reader
                if self._close_request is not None:
                    await self.close(*self._close_request)
        except _Close as c:
            await self.close(c.code, c.error)
        except ProtocolError as exc:
            await self.close(exc.close_code, messages.error(exc.code, exc.message))
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - nothing escapes to aiohttp as a traceback
            log.exception("websocket connection failed")
            await self.close(1011, messages.error("internal_error", "internal server error (see the server log)"))
        finally:
            await self._cleanup()
            self._done.set()

    async def _open(self) -> None:
        ctx = self.ctx
        try:
            msg = await self.ws.receive(timeout=ctx.config.hello_timeout_s)
        except asyncio.TimeoutError as exc:
            raise _Close(CLOSE_TIMEOUT, messages.error(
                "hello_timeout", f"no hello within {ctx.config.hello_timeout_s:.0f} s of connecting")) from exc
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            raise _Close(CLOSE_NORMAL)
        if msg.type != WSMsgType.TEXT:
            raise ProtocolError("bad_hello", "the first message must be a JSON hello (text), not binary")
        check_text_size(msg.data, self.text_limit)
        self.hello = hello = parse_hello(msg.data, ctx.config.jpeg_quality)
        name = ctx.avatars.default if hello.avatar is None else hello.avatar
        try:
            validate_name(name)
            avatar = await asyncio.to_thread(ctx.avatars.get, name)
        except AvatarError as exc:
            code = CLOSE_UNKNOWN_AVATAR if exc.code == "unknown_avatar" else CLOSE_PROTOCOL
            raise _Close(code, messages.error(exc.code, exc.message)) from exc
        try:
            ctx.sessions.reserve(TRANSPORT, self.client)
        except TooManySessions as exc:
            raise _Close(CLOSE_TOO_MANY, messages.error("too_many_sessions", str(exc))) from exc
        self._slot_held = True
        try:
            self.session = await ctx.sessions.open(avatar, hello.speakers, TRANSPORT)
        except SessionError as exc:
            raise _Close(CLOSE_SESSION_FAILED, messages.error(exc.code, exc.message)) from exc
        self.session.add_state_listener(self._on_state)
        await self.ws.send_json(messages.ready(self.session, websocket=True))
        self.out.put_json(messages.state(self.session.state.value))
        for coro, name in ((self._send_loop(), "send"), (self._frame_loop(), "frames"), (self._stats_loop(), "stats")):
            self._tasks.append(asyncio.create_task(coro, name=f"ws-{self.session.id}-{name}"))
        log.info("websocket session %s open for %s (avatar %s, %s)", self.session.id, self.client, avatar.name,
                 hello.pcm)

    async def _read_loop(self) -> None:
        idle = self.ctx.config.ws_idle_timeout_s
        while not self._closing:
            try:
                msg = await self.ws.receive(timeout=idle)
            except asyncio.TimeoutError as exc:
                raise _Close(CLOSE_TIMEOUT, messages.error(
                    "idle_timeout", f"nothing received for {idle:.0f} s; reconnect when you have speech")) from exc
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                return
            if msg.type == WSMsgType.BINARY:
                self._on_audio(msg.data)
            elif msg.type == WSMsgType.TEXT:
                check_text_size(msg.data, self.text_limit)
                self._on_control(parse_json_message(msg.data))
            elif msg.type == WSMsgType.ERROR:
                log.info("websocket error: %s", self.ws.exception())
                return

    # ------------------------------------------------------------------ input
    def _on_audio(self, data: bytes) -> None:
        assert self.session is not None and self.hello is not None
        speaker, pcm = parse_audio(data, self.hello.speakers, self.ctx.config.ws_max_message_bytes)
        try:
            self.session.push_pcm(pcm, self.hello.pcm, speaker)
        except AudioOverflow:
            self.ctx.metrics.audio_overflows.inc()
            now = time.monotonic()
            if now - self._overflow_reported > 1.0:
                self._overflow_reported = now
                self.out.put_json({"type": "warning", "code": "audio_overflow",
                                   "message": "speech buffer full: send audio in real time; the refused audio was dropped"})
        except AudioFormatError as exc:
            raise ProtocolError("bad_audio_format", str(exc)) from exc

    def _on_control(self, msg: dict[str, Any]) -> None:
        assert self.session is not None
        kind = msg["type"]
        if kind == "interrupt":
            self.session.interrupt()
        elif kind == "end_of_speech":
            self.session.end_input()
        elif kind == "ping":
            self.out.put_json({"type": "pong", "t": msg.get("t")})
        elif kind == "stats":
            self.out.put_json(self._stats())
        elif kind == "bye":
            raise _Close(CLOSE_NORMAL)
        else:
            raise ProtocolError(
                "bad_message", f"unknown message type {kind[:40]!r}: use interrupt, end_of_speech, ping, stats or bye"
            )

    # ------------------------------------------------------------------ output
    def _on_state(self, state: SessionState) -> None:
        self.out.put_json(messages.state(state.value))

    def _stats(self) -> dict[str, Any]:
        assert self.session is not None
        return messages.stats(self.session, self.frames_sent, self.frames_dropped)

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ctx.config.stats_interval_s)
            self.out.put_json(self._stats())

    async def _frame_loop(self) -> None:
        session = self.session
        assert session is not None and self.hello is not None
        quality = self.hello.jpeg_quality
        metrics = self.ctx.metrics
        async for frame in session.frames():
            jpeg = await self.ctx.encoder.encode(frame.image, quality)
            if self.out.put_frame(pack_frame(frame, jpeg)):
                self.frames_sent += 1
                metrics.frame(TRANSPORT, frame)
                continue
            self.frames_dropped += 1
            metrics.dropped.labels("slow_client").inc()
            since = self._send_since
            if since is not None and time.monotonic() - since > self.ctx.config.ws_stall_timeout_s:
                stuck = time.monotonic() - since
                self._close_later(CLOSE_TIMEOUT, messages.error(
                    "client_not_reading", f"the client has not read a frame for {stuck:.1f} s"))
                return
        if self._closing:
            return
        if session.error is not None:
            err = messages.error(session.error.code, session.error.message)
            self._close_later(CLOSE_SESSION_FAILED, err)
        else:
            self._close_later(CLOSE_NORMAL)

    def _close_later(self, code: int, error: dict[str, Any] | None = None) -> None:
        """Ask `run()` to close (from a background task or on shutdown); the first request wins."""
        if self._close_request is None:
            self._close_request = (code, error)
        self._close_requested.set()

    async def _send_loop(self) -> None:
        while True:
            item = await self.out.get()
            self._send_since = time.monotonic()
            try:
                if isinstance(item, bytes):
                    await self.ws.send_bytes(item)
                else:
                    await self.ws.send_str(item)
            except (ConnectionError, RuntimeError):
                return
            finally:
                self._send_since = None

    # ------------------------------------------------------------------ teardown
    async def close(self, code: int, error: dict[str, Any] | None = None) -> None:
        """Send `error` (if any) and close with `code`, behind what the client has not read yet.

        aiohttp writes each message to the transport at once and only then waits for the socket to
        drain, so a client that stopped reading still finds the `error` and the close frame after
        the frames it had not read when it reads again (within `ws_close_linger_s`, see `_linger`);
        frames still in our queue are dropped, so nothing else gets in front of them.
        """
        if self._closing:
            return
        self._closing = True
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        # Wait for them: a send stuck in drain shares aiohttp's drain waiter with our close below,
        # and its cancellation would otherwise land on that close.
        await asyncio.gather(*tasks, return_exceptions=True)
        if error is not None:
            self.ctx.metrics.error(error["code"])
            log.info("websocket closing %d: %s: %s", code, error["code"], error["message"])
        ws = self.ws
        try:
            if error is not None and not ws.closed:
                await asyncio.wait_for(ws.send_json(error), 1.0)  # a timeout here is only the drain
            reason = (error or {}).get("code", "").encode()[:120]
            await asyncio.wait_for(ws.close(code=code, message=reason, drain=False), 2.0)
        except (asyncio.TimeoutError, asyncio.CancelledError, ConnectionError, RuntimeError):
            if current is not None and getattr(current, "cancelling", lambda: 0)():
                raise  # we are being cancelled ourselves
        self._linger(self.request.transport)

    def _linger(self, transport: asyncio.BaseTransport | None) -> None:
        """Bytes the client has not read are still in the transport (it stopped reading): close it
        gracefully, so they and our close frame go out when it reads again, but reset it after
        `ws_close_linger_s`, so a client that never reads holds a bounded buffer for that long only.
        (What already sits in the kernel's socket buffers is delivered by the kernel either way.)"""
        if not isinstance(transport, asyncio.WriteTransport) or transport.get_write_buffer_size() == 0:
            return
        transport.close()
        asyncio.get_running_loop().call_later(self.ctx.config.ws_close_linger_s, transport.abort)

    async def _cleanup(self) -> None:
        if not self._closing:
            await self.close(CLOSE_NORMAL)
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.session is not None:
            await self.ctx.sessions.finish(self.session, "websocket closed")
        if self._slot_held:
            self._slot_held = False
            self.ctx.sessions.release(TRANSPORT, self.client)
        self.ctx.connections.discard(self)
        self.ctx.metrics.connections.labels(TRANSPORT).dec()

    async def shutdown(self) -> None:
        if not self._reading:  # still in the handshake: nothing to hand over
            await self.close(CLOSE_GOING_AWAY)
        self._close_later(CLOSE_GOING_AWAY)
        try:
            await asyncio.wait_for(self._done.wait(), 5.0)
        except asyncio.TimeoutError:
            log.warning("websocket did not close within 5 s of shutdown")
