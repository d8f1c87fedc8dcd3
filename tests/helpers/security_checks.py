"""Token and outcome helpers shared by the security and limit tests."""

from __future__ import annotations

import asyncio

import aiohttp

from .ws_checks import HELLO, read_until_close

TOKEN = "s3cret-T0ken-for-tests-0123456789"


async def ws_outcome(http: aiohttp.ClientSession, url: str, **kw) -> tuple[str, object]:
    """('ready', protocol) when a session opened, else ('closed', (error code, close code))."""
    async with http.ws_connect(url, **kw) as ws:
        first = await asyncio.wait_for(ws.receive(), 5)
        if first.type == aiohttp.WSMsgType.TEXT:  # refused before hello: error then close
            error = first.json()
            _, code = await read_until_close(ws)
            return "closed", (error["code"], code)
        if first.type == aiohttp.WSMsgType.CLOSE:
            return "closed", (None, first.data)
        raise AssertionError(f"unexpected first message {first}")


async def ws_session(http: aiohttp.ClientSession, url: str, **kw) -> str | None:
    """Open a session with hello; returns the negotiated subprotocol."""
    async with http.ws_connect(url, **kw) as ws:
        await ws.send_json(HELLO)
        msg = await asyncio.wait_for(ws.receive_json(), 5)
        assert msg["type"] == "ready", msg
        await ws.send_json({"type": "bye"})
        return ws.protocol


async def status(http: aiohttp.ClientSession, method: str, url: str, **kw) -> tuple[int, str | None]:
    async with http.request(method, url, **kw) as r:
        body = await r.json() if r.content_type == "application/json" else None
        code = body["error"]["code"] if isinstance(body, dict) and "error" in body else None
        return r.status, code
