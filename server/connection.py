"""The lifecycle every transport shares, from admission to teardown, in one place.

A transport (`server/ws.py`, `server/webrtc.py`) subclasses `Connection` and keeps only what is its
own: framing and sending, negotiation, media tracks, watchdogs. The shared lifecycle, in order:

1. `register()`: the connection is live: shutdown reaches it, `connections{transport}` counts it.
2. `admit()`: take a session slot for this client (`TooManySessions` past `--max-sessions` or
   `--max-sessions-per-client`).
3. `await start_session(avatar, speakers)`: open the engine session in that slot, send its state
   changes to the client, send `stats` every `stats_interval_s`; `send_ready()` says `ready`.
4. While open: `handle_control(msg)` (interrupt, ping, stats, and what the transport adds),
   `push_pcm()` / `push_av_frame()` (audio faster than real time: a rate-limited `audio_overflow`
   warning), `spawn()` for background work, `session_ended(session)` when the session's frames stop
   on their own (failed: the client gets its `error`, then the connection closes).
5. `await close(goodbye)`, once, whatever happened (a second call returns at once): cancel the
   background tasks, say goodbye the transport's way (`_say_goodbye`), finish the session, close
   the transport (`_close_transport`), release the slot, forget the connection, update the metrics.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from streaming.audio_fifo import AudioOverflow
from streaming.audio_input import PcmFormat
from streaming.generator import Avatar
from streaming.output import OutputFrame
from streaming.session import Session, SessionState

from . import messages
from .transports import Transport
from .ws_protocol import CLOSE_GOING_AWAY, CLOSE_NORMAL, CLOSE_SESSION_FAILED, ProtocolError

if TYPE_CHECKING:
    import av

    from .context import ServerContext

OVERFLOW_WARNING_INTERVAL_S = 1.0
BUFFER_REPORT_INTERVAL_S = 0.1  # generated speech: at most this often a `buffer` message while audio comes
ControlHandler = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Goodbye:
    """How a connection ends. reason: for the log; error: the `error` message the client gets before
    the end (counted in `errors_total{code}`), None for an ordinary end; close_code: for transports
    with close codes (the websocket's, docs/protocol.md), ignored by the others."""

    reason: str
    error: dict[str, Any] | None = None
    close_code: int = CLOSE_NORMAL

    @classmethod
    def with_error(cls, code: str, message: str, close_code: int = CLOSE_NORMAL, reason: str | None = None) -> Goodbye:
        return cls(reason or code, messages.error(code, message), close_code)


SHUTDOWN = Goodbye("server shutting down", close_code=CLOSE_GOING_AWAY)


class ConnectionClosed(Exception):
    """The connection closed (shutdown, hang-up) while a step of its start was under way."""


class Connection(ABC):
    """One client connection of any transport: its session slot, engine session, tasks and end."""

    transport: ClassVar[Transport]
    log: ClassVar[logging.Logger]  # the transport module's logger: operators filter lines per transport
    overflow_message: ClassVar[str] = "speech buffer full: send audio in real time; the refused audio was dropped"
    frames_sent: int  # frames this connection has sent (a transport attribute or property)
    frames_dropped: int  # frames the transport dropped (client too slow), for `stats.dropped_frames`

    def __init__(self, ctx: ServerContext, client: str) -> None:
        self.ctx = ctx
        self.client = client  # the per-client session cap counts per owner (address, or token name)
        self.id = uuid.uuid4().hex[:12]  # also the first session's id
        self.session: Session | None = None
        self.closing = False
        self._tasks: set[asyncio.Task] = set()
        self._registered = False
        self._slot_held = False
        self._overflow_reported = -math.inf
        self.generated_speech = False  # the client declared generated speech (`input: "generated"`)
        self._buffer_reported = -math.inf

    # ------------------------------------------------------------------ the transport's part
    @abstractmethod
    def send(self, msg: dict[str, Any]) -> None:
        """Queue a JSON message for the client; never blocks (dropped when it cannot go)."""

    @abstractmethod
    async def _say_goodbye(self, goodbye: Goodbye) -> None:
        """Give the client `goodbye.error` (if any) and end the output; the session is still open."""

    async def _close_transport(self) -> None:  # noqa: B027 - an optional hook: nothing to release by default
        """Release what the transport holds, after the session is finished."""

    def end(self, goodbye: Goodbye) -> None:
        """Close from a callback or a background task (not awaited). The websocket hands it to its reader."""
        self.spawn(self.close(goodbye), "close")

    async def shutdown(self) -> None:
        """The server is stopping (app shutdown)."""
        await self.close(SHUTDOWN)

    def control_handlers(self) -> dict[str, ControlHandler]:
        """Control messages by `type`; a transport adds its own (docs/protocol.md lists each one's)."""
        handlers = {"interrupt": self._interrupt, "ping": self._ping, "stats": lambda msg: self.send_stats()}
        if self.generated_speech:
            handlers["segment_end"] = self._segment_end
        return handlers

    # ------------------------------------------------------------------ 1-3: admission and the session
    def register(self) -> None:
        self.ctx.connections.add(self)
        self.ctx.metrics.connections.labels(self.transport.name).inc()
        self._registered = True

    def admit(self) -> None:
        """Take a session slot for this client, or raise `TooManySessions`."""
        if self.closing:
            raise ConnectionClosed
        self.ctx.sessions.reserve(self.transport.name, self.client)
        self._slot_held = True

    async def start_session(self, avatar: Avatar, speakers: int, detail: str = "") -> Session:
        """Open the connection's session (in the admitted slot) and start sending its stats."""
        self.session = session = await self.open_session(avatar, speakers, self.id)
        self.spawn(self._stats_loop(), "stats")
        self.log.info("%s session %s open for %s (avatar %s%s)", self.transport.name, session.id, self.client,
                      avatar.name, detail)
        return session

    async def open_session(self, avatar: Avatar, speakers: int, session_id: str | None = None) -> Session:
        """An engine session whose state changes go to the client (`SessionError` if it cannot start).

        The slot is the caller's. A session that finishes opening after the connection closed, or
        after its opener was cancelled, is finished at once: never leaked in the engine."""
        if self.closing:
            raise ConnectionClosed
        buffer_s = self.ctx.config.generated_buffer_s if self.generated_speech else None
        opening = asyncio.ensure_future(self.ctx.sessions.open(avatar, speakers, self.transport.name, session_id,
                                                               buffer_s))
        try:
            session = await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(self._finish_orphan)
            raise
        if self.closing:
            await self.ctx.sessions.finish(session, "connection closed while the session opened")
            raise ConnectionClosed
        session.add_state_listener(self._on_state)
        return session

    def _finish_orphan(self, opening: asyncio.Future) -> None:
        if not opening.cancelled() and opening.exception() is None:
            task = asyncio.ensure_future(self.ctx.sessions.finish(opening.result(), "opener cancelled"))
            self._tasks.add(task)  # a reference until done
            task.add_done_callback(self._tasks.discard)

    def send_ready(self) -> None:
        """`ready` and the current state (again after a session restart)."""
        if self.session is not None:
            self.send(messages.ready(self.session, self.transport))
            self.send(messages.state(self.session.state.value))

    def _on_state(self, state: SessionState) -> None:
        self.send(messages.state(state.value))

    # ------------------------------------------------------------------ 4: while open
    def handle_control(self, msg: dict[str, Any]) -> None:
        """A parsed control message ({"type": str, ...}); an unknown type raises `ProtocolError`."""
        handlers = self.control_handlers()
        handler = handlers.get(msg["type"])
        if handler is None:
            names = list(handlers)
            raise ProtocolError("bad_message", f"unknown message type {msg['type'][:40]!r}: use "
                                f"{', '.join(names[:-1])} or {names[-1]}")
        handler(msg)

    def _interrupt(self, msg: dict[str, Any]) -> None:
        if self.session is not None:
            self.session.interrupt()

    def _segment_end(self, msg: dict[str, Any]) -> None:
        """Generated speech: the segment being sent is complete. `{"type": "segment_end"}`, no other field."""
        extra = sorted(set(msg) - {"type"})
        if extra:
            raise ProtocolError("bad_message", f"segment_end takes no fields, got {', '.join(extra)[:80]}")
        if self.session is not None:
            self.session.end_segment()
            self.send_buffer(force=True)

    def _ping(self, msg: dict[str, Any]) -> None:
        self.send({"type": "pong", "t": msg.get("t")})

    def report(self, code: str, message: str) -> None:
        """An `error` that does not end the connection (counted in `errors_total{code}`)."""
        self.ctx.metrics.error(code)
        self.send(messages.error(code, message))

    def push_pcm(self, data: bytes | memoryview, fmt: PcmFormat, speaker: int = 0) -> None:
        """Client PCM into the session (`AudioFormatError` is the transport's to report)."""
        if self.session is not None:
            try:
                self.session.push_pcm(data, fmt, speaker)
            except AudioOverflow:
                self._audio_overflow()
            else:
                self.send_buffer()

    def push_av_frame(self, frame: av.AudioFrame, speaker: int = 0) -> None:
        """A decoded audio frame into the session (`AudioFormatError`, `ValueError`: the transport's)."""
        if self.session is not None:
            try:
                self.session.push_av_frame(frame, speaker)
            except AudioOverflow:
                self._audio_overflow()

    def _audio_overflow(self) -> None:
        self.ctx.metrics.audio_overflows.inc()
        if self.generated_speech:  # a bound of minutes: not a real-time sender's jitter but a client error
            s = self.session
            held = 0.0 if s is None else s.buffered_seconds()
            self.report("buffer_full", f"generated speech buffer full ({held:.1f} s held, limit "
                        f"{self.ctx.config.generated_buffer_s:g} s): the refused audio was dropped; wait for "
                        "`buffer` messages showing room before sending more")
            return
        now = time.monotonic()
        if now - self._overflow_reported > OVERFLOW_WARNING_INTERVAL_S:
            self._overflow_reported = now
            self.send(messages.warning("audio_overflow", self.overflow_message))

    def count_frame(self, frame: OutputFrame) -> None:
        """A frame went to the client (metrics)."""
        self.ctx.metrics.frame(self.transport.name, frame)

    def send_events(self, frame: OutputFrame) -> None:
        """The playback events due with `frame` (generated speech), right after the frame itself."""
        for event in frame.events:
            self.send(event)

    def send_buffer(self, force: bool = False) -> None:
        """Generated speech's flow control: how much speech is buffered (rate-limited unless `force`)."""
        if not self.generated_speech or self.session is None:
            return
        now = time.monotonic()
        if force or now - self._buffer_reported >= BUFFER_REPORT_INTERVAL_S:
            self._buffer_reported = now
            self.send(messages.buffer(self.session))

    def send_stats(self) -> None:
        if self.session is not None:
            self.send(messages.stats(self.session, self.frames_sent, self.frames_dropped))

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ctx.config.stats_interval_s)
            self.send_stats()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task | None:
        """Run `coro` as this connection's background task: cancelled (and awaited) by `close()`.
        None once closing: nothing new starts then."""
        if self.closing:
            coro.close()
            return None
        task = asyncio.create_task(coro, name=f"{self.transport.name}-{self.id}-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def session_ended(self, session: Session) -> None:
        """The session's frames stopped on their own: it failed (the client gets its `error`) or closed."""
        if self.closing or session is not self.session:
            return
        err = session.error
        if err is not None:
            self.end(Goodbye.with_error(err.code, err.message, CLOSE_SESSION_FAILED, f"session failed: {err.code}"))
        else:
            self.end(Goodbye("session closed"))

    # ------------------------------------------------------------------ 5: the end
    async def close(self, goodbye: Goodbye) -> None:
        """End the connection in the one order (module docstring, step 5). Idempotent."""
        if self.closing:
            return
        self.closing = True
        error = goodbye.error
        if error is not None:
            self.ctx.metrics.error(error["code"])
            self.log.info("%s %s closing: %s (%s)", self.transport.name, self.id, goodbye.reason, error["message"])
        else:
            self.log.info("%s %s closing: %s", self.transport.name, self.id, goodbye.reason)
        try:
            await self._cancel_tasks()
            await self._say_goodbye(goodbye)
        finally:
            await self._teardown(goodbye.reason)

    async def _cancel_tasks(self) -> None:
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _teardown(self, reason: str) -> None:
        try:
            if self.session is not None:
                await self.ctx.sessions.finish(self.session, reason)
            try:
                await self._close_transport()
            except Exception:  # noqa: BLE001 - the accounting below must happen
                self.log.warning("%s %s: closing the transport failed", self.transport.name, self.id, exc_info=True)
        finally:
            if self._slot_held:
                self._slot_held = False
                self.ctx.sessions.release(self.transport.name, self.client)
            if self._registered:
                self._registered = False
                self.ctx.connections.discard(self)
                self.ctx.metrics.connections.labels(self.transport.name).dec()
