"""Websocket transport `/ws`: hello/ready, binary audio in, JPEG + PCM frames out, JSON control.

The lifecycle (slot, session, control, audio, tasks, teardown) is `Connection`'s; here is what is
the websocket's: the handshake, framing, the send queue and the close. Backpressure: frames go
through a bounded per-connection queue drained by one sender task. A client that stops reading
fills it; further frames are dropped (counted) and, once a send has been stuck for
`ws_stall_timeout_s`, the connection is closed with 4408: the `error` and the close frame go out
behind the frames already in the socket buffers, and the connection is kept for
`ws_close_linger_s`, so a client that reads again gets them (see `_say_goodbye`). Every protocol
error becomes an `error` message and a close code; nothing a client sends can raise out of here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from typing import Any

from aiohttp import WSMsgType, web

from streaming.audio_input import AudioFormatError
from streaming.generator import Avatar
from streaming.session import SessionError

from .avatars import AvatarError, validate_name
from .connection import SHUTDOWN, Connection, ConnectionClosed, ControlHandler, Goodbye
from .context import ServerContext, context_of
from .errors import ApiError
from .security import WS_SUBPROTOCOL, offered_protocols, without_foreign_protocols
from .sessions import TooManySessions
from .transports import Transport
from .ws_protocol import (
    AUDIO_HEADER,
    CLOSE_INTERNAL_ERROR,
    CLOSE_PROTOCOL,
    CLOSE_SESSION_FAILED,
    CLOSE_TIMEOUT,
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

MAX_QUEUED_JSON = 256


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ws", handle_ws)


TRANSPORT = Transport("websocket", frames_in_band=True, add_routes=add_routes)


class _Close(Exception):
    """Raised inside the connection's reader or handshake: close with this goodbye."""

    def __init__(self, goodbye: Goodbye) -> None:
        super().__init__(goodbye.reason)
        self.goodbye = goodbye


def _protocol_goodbye(exc: ProtocolError) -> Goodbye:
    return Goodbye.with_error(exc.code, exc.message, exc.close_code)


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

    async def drained(self, timeout: float) -> None:
        """Until everything queued was handed to the socket (or `timeout` passed)."""
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout
        while self._items and loop.time() < until:
            await asyncio.sleep(0.01)

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
    await WsConnection(ctx, ws, request).run()
    return ws


class WsConnection(Connection):
    """One websocket client. Its reader (`run`) is the one place that closes: background closes
    (session end, stalled client, shutdown) are handed to it (`end`), so it stops reading first and
    aiohttp's close handshake can wait for the client's close frame."""

    transport = TRANSPORT
    log = log

    def __init__(self, ctx: ServerContext, ws: web.WebSocketResponse, request: web.Request) -> None:
        super().__init__(ctx, ctx.security.owner(request))
        self.ws = ws
        self.request = request
        self.hello: Hello | None = None
        self.out = OutQueue(ctx.config.ws_send_queue_frames)
        self.text_limit = ctx.config.ws_max_message_bytes - AUDIO_HEADER.size  # 1 MiB, as for PCM
        self.frames_sent = 0
        self.frames_dropped = 0
        self._send_since: float | None = None  # when the send in flight started
        self._close_request: Goodbye | None = None
        self._close_requested = asyncio.Event()
        self._done = asyncio.Event()
        self._reading = False
        self._ending = False  # generated speech: the client sent `end_session`

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        """Handshake, then read until the client leaves or something asks to close; close in every case."""
        self.register()
        goodbye = Goodbye("websocket closed")
        try:
            await self._open()
            goodbye = await self._read_until_close()
        except _Close as c:
            goodbye = c.goodbye
        except ProtocolError as exc:
            goodbye = _protocol_goodbye(exc)
        except ConnectionClosed:
            pass  # closed (shutdown) during the handshake
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - nothing escapes to aiohttp as a traceback
            log.exception("websocket connection failed")
            goodbye = Goodbye.with_error("internal_error", "internal server error (see the server log)",
                                         CLOSE_INTERNAL_ERROR)
        finally:
            await self.close(goodbye)
            self._done.set()

    async def _open(self) -> None:
        """hello -> avatar -> slot -> session -> ready; then the sender and the frame loop run."""
        self.hello = hello = await self._receive_hello()
        self.generated_speech = hello.generated
        avatar = await self._avatar(hello.avatar)
        try:
            self.admit()
            await self.start_session(avatar, hello.speakers, f", {hello.pcm}")
        except TooManySessions as exc:  # the limits; in cluster mode also no free worker (4503)
            raise _Close(Goodbye.with_error(exc.code, str(exc), exc.close_code)) from exc
        except SessionError as exc:
            raise _Close(Goodbye.with_error(exc.code, exc.message, CLOSE_SESSION_FAILED)) from exc
        self.send_ready()
        self.spawn(self._send_loop(), "send")
        self.spawn(self._frame_loop(), "frames")

    async def _receive_hello(self) -> Hello:
        timeout = self.ctx.config.hello_timeout_s
        try:
            msg = await self.ws.receive(timeout=timeout)
        except asyncio.TimeoutError as exc:
            raise _Close(Goodbye.with_error(
                "hello_timeout", f"no hello within {timeout:.0f} s of connecting", CLOSE_TIMEOUT)) from exc
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            raise _Close(Goodbye("the client left before hello"))
        if msg.type != WSMsgType.TEXT:
            raise ProtocolError("bad_hello", "the first message must be a JSON hello (text), not binary")
        check_text_size(msg.data, self.text_limit)
        return parse_hello(msg.data, self.ctx.config.jpeg_quality)

    async def _avatar(self, requested: str | None) -> Avatar:
        name = self.ctx.avatars.default if requested is None else requested
        try:
            validate_name(name)
            return await asyncio.to_thread(self.ctx.avatars.get, name)
        except AvatarError as exc:
            code = CLOSE_UNKNOWN_AVATAR if exc.code == "unknown_avatar" else CLOSE_PROTOCOL
            raise _Close(Goodbye.with_error(exc.code, exc.message, code)) from exc

    async def _read_until_close(self) -> Goodbye:
        """Read until the client leaves (or breaks the protocol: raised) or a close is requested."""
        self._reading = True
        reader = self.spawn(self._read_loop(), "reader")
        if reader is None:
            raise ConnectionClosed
        requested = asyncio.ensure_future(self._close_requested.wait())
        try:
            await asyncio.wait({reader, requested}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            requested.cancel()
        if not reader.done():
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        else:
            reader.result()  # re-raises _Close / ProtocolError from the reader
        return self._close_request or Goodbye("the client closed the websocket")

    def end(self, goodbye: Goodbye) -> None:
        """Ask `run()` to close (from a background task or on shutdown); the first request wins."""
        if self._close_request is None:
            self._close_request = goodbye
        self._close_requested.set()

    async def shutdown(self) -> None:
        if not self._reading:  # still in the handshake: nothing to hand over
            await self.close(SHUTDOWN)
        self.end(SHUTDOWN)
        try:
            await asyncio.wait_for(self._done.wait(), 5.0)
        except asyncio.TimeoutError:
            log.warning("websocket %s did not close within 5 s of shutdown", self.id)

    # ------------------------------------------------------------------ input
    async def _read_loop(self) -> None:
        idle = self.ctx.config.ws_idle_timeout_s
        while not self.closing:
            try:
                msg = await self.ws.receive(timeout=idle)
            except asyncio.TimeoutError as exc:
                raise _Close(Goodbye.with_error(
                    "idle_timeout", f"nothing received for {idle:.0f} s; reconnect when you have speech",
                    CLOSE_TIMEOUT)) from exc
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                return
            if msg.type == WSMsgType.BINARY:
                self._on_audio(msg.data)
            elif msg.type == WSMsgType.TEXT:
                check_text_size(msg.data, self.text_limit)
                self.handle_control(parse_json_message(msg.data))
            elif msg.type == WSMsgType.ERROR:
                log.info("websocket %s error: %s", self.id, self.ws.exception())
                return

    def _on_audio(self, data: bytes) -> None:
        assert self.hello is not None
        speaker, pcm = parse_audio(data, self.hello.speakers, self.ctx.config.ws_max_message_bytes)
        if self._ending:
            raise ProtocolError("audio_after_end", "audio after end_session: the session is playing out its "
                                "last segments and closing; open a new connection to speak again")
        try:
            self.push_pcm(pcm, self.hello.pcm, speaker)
        except AudioFormatError as exc:
            raise ProtocolError("bad_audio_format", str(exc)) from exc

    def control_handlers(self) -> dict[str, ControlHandler]:
        handlers = {**super().control_handlers(), "end_of_speech": self._end_of_speech, "bye": self._bye}
        if self.generated_speech:
            handlers["end_session"] = self._end_session
        return handlers

    def _end_of_speech(self, msg: dict[str, Any]) -> None:
        if self.session is not None:
            self.session.end_input()

    def _end_session(self, msg: dict[str, Any]) -> None:
        """Generated speech: play what is buffered (the open segment ends here), then close with 1000."""
        if self._ending or self.session is None:
            return
        self._ending = True
        self.session.end_segment()
        if self.session.unfinished_segments == 0:
            self.spawn(self._end_when_sent(), "end")

    async def _end_when_sent(self) -> None:
        """After `end_session`, once the last `playback_finished` is out: close normally."""
        await self.out.drained(2.0)
        self.end(Goodbye("the client ended the session"))

    def _bye(self, msg: dict[str, Any]) -> None:
        raise _Close(Goodbye("bye"))

    # ------------------------------------------------------------------ output
    def send(self, msg: dict[str, Any]) -> None:
        self.out.put_json(msg)

    async def _frame_loop(self) -> None:
        session = self.session
        assert session is not None and self.hello is not None
        quality = self.hello.jpeg_quality
        async for frame in session.frames():
            jpeg = await self.ctx.encoder.encode(frame.image, quality)
            sent = self.out.put_frame(pack_frame(frame, jpeg))
            if frame.events:
                self.send_events(frame)
                if self._ending and session.unfinished_segments == 0:
                    self.spawn(self._end_when_sent(), "end")
            if sent:
                self.frames_sent += 1
                self.count_frame(frame)
                continue
            self.frames_dropped += 1
            self.ctx.metrics.dropped.labels("slow_client").inc()
            since = self._send_since
            if since is not None and time.monotonic() - since > self.ctx.config.ws_stall_timeout_s:
                stuck = time.monotonic() - since
                self.end(Goodbye.with_error(
                    "client_not_reading", f"the client has not read a frame for {stuck:.1f} s", CLOSE_TIMEOUT))
                return
        self.session_ended(session)

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

    # ------------------------------------------------------------------ the close
    async def _say_goodbye(self, goodbye: Goodbye) -> None:
        """Send `error` (if any) and close with the goodbye's code, behind what the client has not read yet.

        aiohttp writes each message to the transport at once and only then waits for the socket to
        drain, so a client that stopped reading still finds the `error` and the close frame after
        the frames it had not read when it reads again (within `ws_close_linger_s`, see `_linger`);
        frames still in our queue are dropped, so nothing else gets in front of them. (The tasks
        are already cancelled and awaited: a send stuck in drain shares aiohttp's drain waiter with
        the close below, and its cancellation would otherwise land on that close.)
        """
        ws, error = self.ws, goodbye.error
        try:
            if error is not None and not ws.closed:
                await asyncio.wait_for(ws.send_json(error), 1.0)  # a timeout here is only the drain
            reason = (error or {}).get("code", "").encode()[:120]
            await asyncio.wait_for(ws.close(code=goodbye.close_code, message=reason, drain=False), 2.0)
        except (asyncio.TimeoutError, asyncio.CancelledError, ConnectionError, RuntimeError):
            current = asyncio.current_task()
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
