"""Issue 13: bad input that still got through (found by a client written from docs/protocol.md).

Deeply nested JSON, text messages over the documented size, booleans where integers are due, an
empty avatar name, a client that stops reading: each gets its documented error and close code,
with no traceback in the server log, and the server carries on.
"""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
import pytest

from ..helpers.rtc_client import RtcTestClient
from ..helpers.server_app import live_server
from ..helpers.ws_checks import HELLO, assert_serves_a_session, read_until_close, ws_error

NESTED = "[" * 100_000


def tracebacks(caplog) -> list[str]:
    return [f"{r.name}: {r.getMessage()[:120]}" for r in caplog.records if r.exc_info]


@pytest.mark.parametrize("after_hello", [False, True])
async def test_deeply_nested_json_on_the_websocket_is_bad_message_4400_without_a_traceback(caplog, after_hello):
    caplog.set_level(logging.INFO)
    async with live_server() as srv, aiohttp.ClientSession() as http:
        if after_hello:
            error, close = await ws_error(srv, http, HELLO, NESTED)
        else:
            async with http.ws_connect(srv.ws_url) as ws:
                await ws.send_str(NESTED)
                error, close = await read_until_close(ws)
        assert error is not None and error["code"] == "bad_message" and "nested" in error["message"]
        assert close == 4400
        await assert_serves_a_session(srv, http)
    assert not tracebacks(caplog)


async def test_deeply_nested_json_in_an_offer_or_on_the_data_channel_is_a_clear_error(caplog):
    caplog.set_level(logging.INFO)
    async with live_server() as srv, aiohttp.ClientSession() as http:
        async with http.post(srv.url + "/offer", data=NESTED) as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == "bad_json"
        client = RtcTestClient(None)
        try:
            assert (await client.connect(srv.url))["status"] == 200
            await client.wait_for(lambda: client.of_type("ready"), 10)
            client.channel.send("[" * 50_000)
            await client.wait_for(lambda: client.of_type("error"), 5)
            assert client.of_type("error")[0]["code"] == "bad_message"
            client.send({"type": "ping", "t": 7})
            await client.wait_for(lambda: client.of_type("pong"), 5)  # the channel still works
        finally:
            await client.close()
    assert not tracebacks(caplog)


def padded(msg: dict, size: int, char: str = "x") -> str:
    """`msg` as JSON with a "pad" string making it exactly `size` bytes of UTF-8."""
    bare = len(json.dumps({**msg, "pad": ""}, ensure_ascii=False).encode())
    k, rest = divmod(size - bare, len(char.encode()))
    text = json.dumps({**msg, "pad": char * k + "x" * rest}, ensure_ascii=False)
    assert len(text.encode()) == size
    return text


MIB = 1024 * 1024


@pytest.mark.parametrize(("first", "then"), [
    (padded(HELLO, 2 * MIB), None),  # a 2 MiB hello
    (json.dumps(HELLO), padded({"type": "ping"}, MIB + 512 * 1024)),  # a 1.5 MiB ping
    (json.dumps(HELLO), padded({"type": "ping"}, MIB + 2, "é")),  # 1 MiB + 2 bytes, fewer characters
])
async def test_a_text_message_over_1_mib_is_closed_with_4413_like_a_binary_one(first, then):
    async with live_server() as srv, aiohttp.ClientSession() as http:
        async with http.ws_connect(srv.ws_url) as ws:
            await ws.send_str(first)
            if then is not None:
                assert (await asyncio.wait_for(ws.receive_json(), 5))["type"] == "ready"
                await ws.send_str(then)
            error, close = await asyncio.wait_for(read_until_close(ws), 10)
        assert error is not None and error["code"] == "too_large" and "1048576" in error["message"]
        assert close == 4413
        await assert_serves_a_session(srv, http)


async def test_a_text_message_of_exactly_1_mib_is_accepted():
    async with live_server() as srv, aiohttp.ClientSession() as http:
        async with http.ws_connect(srv.ws_url) as ws:
            await ws.send_str(padded(HELLO, MIB))
            assert (await asyncio.wait_for(ws.receive_json(), 5))["type"] == "ready"
            await ws.send_str(padded({"type": "ping", "t": 5}, MIB, "é"))
            while (msg := await asyncio.wait_for(ws.receive(), 5)).type != aiohttp.WSMsgType.TEXT or \
                    json.loads(msg.data)["type"] != "pong":
                pass
            assert json.loads(msg.data)["t"] == 5
            await ws.send_json({"type": "bye"})


@pytest.mark.parametrize(("hello", "code"), [
    ({"type": "hello", "version": True}, "bad_version"),  # a JSON boolean is not the integer 1
    ({**HELLO, "audio": {"sample_rate": True}}, "bad_audio_format"),
    ({**HELLO, "audio": {"channels": True}}, "bad_audio_format"),
    ({**HELLO, "speakers": True}, "bad_hello"),
    ({**HELLO, "video": {"quality": True}}, "bad_hello"),
    ({**HELLO, "avatar": ""}, "bad_name"),  # names are 1-64 characters
    ({**HELLO, "avatar": None}, "bad_hello"),  # leave it out for the default
    ({**HELLO, "avatar": 5}, "bad_hello"),
])
async def test_hello_fields_of_the_wrong_type_or_an_empty_avatar_name_are_refused(hello, code):
    async with live_server() as srv, aiohttp.ClientSession() as http:
        error, close = await asyncio.wait_for(ws_error(srv, http, hello), 10)
        assert error is not None and error["code"] == code and error["message"]
        assert close == 4400


async def test_an_offer_with_an_empty_or_null_avatar_name_is_400_bad_name():
    async with live_server() as srv, aiohttp.ClientSession() as http:
        for avatar in ("", None, 7):
            async with http.post(srv.url + "/offer", json={"type": "offer", "sdp": "v=0\r\n", "avatar": avatar}) as r:
                assert r.status == 400 and (await r.json())["error"]["code"] == "bad_name", avatar
        assert srv.ctx.sessions.active == 0


async def read_ws_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One unmasked server frame from a raw socket: (opcode, payload)."""
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    return b0 & 0x0F, await reader.readexactly(n)


async def test_a_client_that_stops_reading_gets_error_and_4408_when_it_reads_again():
    from ..helpers.server_app import BlockPatternGenerator

    gen = BlockPatternGenerator(size=(640, 480), noise=True)  # big frames fill the socket buffers quickly
    async with live_server(gen, ws_stall_timeout_s=1.0, ws_send_queue_frames=5) as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", int(srv.url.rsplit(":", 1)[1]))

        writer.write(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        assert b" 101 " in await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        hello, mask = json.dumps({**HELLO, "video": {"quality": 100}}).encode(), b"\x01\x02\x03\x04"
        writer.write(bytes([0x81, 0x80 | len(hello)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(hello)))
        await writer.drain()
        reader._transport.pause_reading()  # a stuck client
        for _ in range(200):  # the server gives up on it (and frees its session) ...
            if not srv.ctx.connections and not srv.ctx.engine.sessions:
                break
            await asyncio.sleep(0.05)
        assert not srv.ctx.connections and not srv.ctx.engine.sessions
        reader._transport.resume_reading()  # ... and then it reads again
        frames, texts = 0, []
        while True:
            opcode, payload = await asyncio.wait_for(read_ws_frame(reader), 10)
            if opcode == 0x2:
                frames += 1
            elif opcode == 0x1:
                texts.append(json.loads(payload))
            elif opcode == 0x8:
                break
        writer.close()
    assert frames > 0  # the frames it had not read yet come first
    assert texts[-1]["type"] == "error" and texts[-1]["code"] == "client_not_reading"
    assert int.from_bytes(payload[:2], "big") == 4408 and payload[2:] == b"client_not_reading"


async def test_a_text_message_that_is_not_utf8_closes_with_1007_as_documented():
    async with live_server() as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", int(srv.url.rsplit(":", 1)[1]))
        writer.write(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        assert b" 101 " in await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        text, mask = b'{"type": "\xff\xfe"}', b"\x01\x02\x03\x04"
        writer.write(bytes([0x81, 0x80 | len(text)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(text)))
        while (frame := await asyncio.wait_for(read_ws_frame(reader), 5))[0] != 0x8:
            pass
        writer.close()
        assert int.from_bytes(frame[1][:2], "big") == 1007
        for _ in range(100):
            if not srv.ctx.connections:
                break
            await asyncio.sleep(0.02)
        assert not srv.ctx.connections
