"""The shared connection lifecycle (`server/connection.py`), driven through a third transport written
here in a few lines, as the integrations issue will write one: what it gets for free, in the one order."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from server.connection import Connection, ConnectionClosed, Goodbye
from server.sessions import TooManySessions
from server.transports import Transport
from server.ws_protocol import CLOSE_SESSION_FAILED, ProtocolError

from ..helpers.failing_backend import FailsForOneAvatar
from ..helpers.server_app import BlockPatternGenerator, live_server

LIST = Transport("list", frames_in_band=False, add_routes=lambda app: None)


class ListConnection(Connection):
    """A whole transport: JSON messages into a list, frames counted, goodbyes recorded."""

    transport = LIST
    log = logging.getLogger("tests.list_transport")
    frames_dropped = 0

    def __init__(self, ctx: Any, client: str = "tester") -> None:
        super().__init__(ctx, client)
        self.sent: list[dict] = []
        self.goodbyes: list[Goodbye] = []
        self.frames_sent = 0

    def send(self, msg: dict) -> None:
        self.sent.append(msg)

    async def _say_goodbye(self, goodbye: Goodbye) -> None:
        self.goodbyes.append(goodbye)

    async def open(self, avatar: str = "test") -> None:
        self.register()
        self.admit()
        session = await self.start_session(self.ctx.avatars.get(avatar), 1)
        self.send_ready()
        self.spawn(self._frames(session), "frames")

    async def _frames(self, session) -> None:
        async for frame in session.frames():
            self.frames_sent += 1
            self.count_frame(frame)
        self.session_ended(session)

    def of_type(self, kind: str) -> list[dict]:
        return [m for m in self.sent if m["type"] == kind]


def metric(srv, line: str) -> bool:
    return line in srv.ctx.metrics.render().decode()


async def until(predicate, timeout: float = 3.0) -> None:
    end = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < end, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_a_new_transport_gets_admission_session_control_stats_and_teardown_from_the_lifecycle():
    async with live_server(stats_interval_s=0.1) as srv:
        conn = ListConnection(srv.ctx)
        await conn.open()
        ready = conn.sent[0]
        assert ready["type"] == "ready" and ready["session_id"] == conn.id == conn.session.id
        assert "version" not in ready and "sample_rate" not in ready  # frames are not in band here
        assert conn.sent[1] == {"type": "state", "state": "idle"}
        assert srv.ctx.sessions.active == 1 and srv.ctx.sessions.held_by("tester") == 1
        assert metric(srv, 'infinitetalk_sessions{transport="list"} 1.0')
        assert metric(srv, 'infinitetalk_connections{transport="list"} 1.0')

        conn.handle_control({"type": "ping", "t": 3})
        assert conn.sent[-1] == {"type": "pong", "t": 3}
        with pytest.raises(ProtocolError) as err:
            conn.handle_control({"type": "dance"})
        assert err.value.code == "bad_message" and "interrupt, ping or stats" in err.value.message
        await until(lambda: conn.of_type("stats") and conn.frames_sent >= 5)
        assert conn.of_type("stats")[-1]["frames"] > 0
        assert metric(srv, 'infinitetalk_frames_emitted_total{transport="list"}')

        await conn.close(Goodbye("done"))
        await conn.close(Goodbye("again"))  # idempotent: one goodbye, one teardown
        assert [g.reason for g in conn.goodbyes] == ["done"]
        assert not srv.ctx.engine.sessions and srv.ctx.sessions.active == 0 and not srv.ctx.connections
        assert all(t.done() for t in conn._tasks) and not conn._tasks
        assert metric(srv, 'infinitetalk_sessions{transport="list"} 0.0')
        assert metric(srv, 'infinitetalk_connections{transport="list"} 0.0')


async def test_a_failed_session_ends_the_connection_with_its_error_and_a_counted_code():
    async with live_server(FailsForOneAvatar("other", fail_on_window=1)) as srv:
        conn = ListConnection(srv.ctx)
        await conn.open("other")
        await until(lambda: conn.goodbyes and not srv.ctx.connections, 5)
        (bye,) = conn.goodbyes
        assert bye.error is not None and bye.error["code"] == "generator_error"
        assert bye.close_code == CLOSE_SESSION_FAILED and bye.reason == "session failed: generator_error"
        assert srv.ctx.sessions.active == 0 and not srv.ctx.engine.sessions
        assert metric(srv, 'infinitetalk_errors_total{code="generator_error"} 1.0')


async def test_the_slot_limit_counts_every_transport_together():
    async with live_server(max_sessions=1) as srv:
        first = ListConnection(srv.ctx)
        await first.open()
        second = ListConnection(srv.ctx, "someone else")
        second.register()
        with pytest.raises(TooManySessions):
            second.admit()
        await second.close(Goodbye("refused"))
        await first.close(Goodbye("done"))
        assert srv.ctx.sessions.active == 0 and not srv.ctx.connections


async def test_a_session_that_opens_after_the_connection_closed_is_finished_not_leaked():
    async with live_server(BlockPatternGenerator()) as srv:
        conn = ListConnection(srv.ctx)
        conn.register()
        conn.admit()
        opening = asyncio.create_task(conn.start_session(srv.ctx.avatars.get("test"), 1))
        await asyncio.sleep(0)  # the open is under way
        await conn.close(Goodbye("hung up while opening"))
        with pytest.raises(ConnectionClosed):
            await opening
        await until(lambda: not srv.ctx.engine.sessions)
        assert srv.ctx.sessions.active == 0 and not srv.ctx.connections


async def test_a_cancelled_opener_leaves_no_session_behind():
    async with live_server(BlockPatternGenerator()) as srv:
        conn = ListConnection(srv.ctx)
        conn.register()
        conn.admit()
        opening = asyncio.create_task(conn.open_session(srv.ctx.avatars.get("test"), 1))
        await asyncio.sleep(0)
        opening.cancel()
        with pytest.raises(asyncio.CancelledError):
            await opening
        await until(lambda: not srv.ctx.engine.sessions)
        await conn.close(Goodbye("done"))
        assert srv.ctx.sessions.active == 0
