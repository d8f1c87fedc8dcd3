"""Websocket checks shared by the server tests: error + close code of a bad message, a session still served."""

from __future__ import annotations

import asyncio
import json

import aiohttp


async def eventually(predicate, timeout: float = 3.0) -> None:
    end = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < end, "condition not reached in time"
        await asyncio.sleep(0.02)


async def assert_serves_a_session(srv, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(srv.ws_url) as ws:
        await ws.send_json({"type": "hello", "version": 1})
        assert (await asyncio.wait_for(ws.receive_json(), 5))["type"] == "ready"
        frames = 0
        while frames < 3:
            msg = await asyncio.wait_for(ws.receive(), 5)
            frames += msg.type == aiohttp.WSMsgType.BINARY
        await ws.send_json({"type": "bye"})


async def ws_error(srv, http, first, then=None) -> tuple[dict, int]:
    """Send `first` (hello or raw), optionally `then`; return the error message and the close code."""
    async with http.ws_connect(srv.ws_url) as ws:
        await (ws.send_bytes(first) if isinstance(first, bytes) else ws.send_str(json.dumps(first)))
        if then is not None:
            assert (await asyncio.wait_for(ws.receive_json(), 5))["type"] == "ready"
            await (ws.send_bytes(then) if isinstance(then, bytes) else ws.send_str(then))
        return await read_until_close(ws)


async def read_until_close(ws) -> tuple[dict | None, int | None]:
    """The last `error` message and the close code the server sent (from its close frame)."""
    error = None
    while True:
        msg = await asyncio.wait_for(ws.receive(), 10)
        if msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data)["type"] == "error":
            error = json.loads(msg.data)
        elif msg.type == aiohttp.WSMsgType.CLOSE:
            return error, msg.data
        elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            return error, ws.close_code


HELLO = {"type": "hello", "version": 1}
