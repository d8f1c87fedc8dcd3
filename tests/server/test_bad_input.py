"""Bad input never hurts the server: clear JSON errors / close codes, and the next session still works."""

import asyncio
import json

import aiohttp
import pytest

from ..helpers.server_app import live_server
from ..helpers.ws_checks import HELLO, assert_serves_a_session, eventually, read_until_close, ws_error


@pytest.mark.parametrize(
    ("first", "then", "code", "close"),
    [
        (b"\x00\x01garbage", None, "bad_hello", 4400),
        ({"type": "hi"}, None, "bad_hello", 4400),
        ({"type": "hello", "version": 2}, None, "bad_version", 4400),
        ({**HELLO, "audio": {"sample_rate": 12345.6}}, None, "bad_audio_format", 4400),
        ({**HELLO, "audio": {"sample_rate": 1000}}, None, "bad_audio_format", 4400),
        ({**HELLO, "audio": {"channels": 0}}, None, "bad_audio_format", 4400),
        ({**HELLO, "audio": {"format": "mp3"}}, None, "bad_audio_format", 4400),
        ({**HELLO, "avatar": "../../etc/passwd"}, None, "bad_name", 4400),
        ({**HELLO, "avatar": "nobody"}, None, "unknown_avatar", 4404),
        (HELLO, b"\xde\xad\xbe\xef garbage", "bad_header", 4400),
        (HELLO, b"A\x01", "bad_header", 4400),
        (HELLO, bytes([0x41, 1, 3, 0]) + b"\x00\x00", "bad_header", 4400),  # speaker 3 of 1
        (HELLO, "not json", "bad_message", 4400),
        (HELLO, json.dumps({"type": "dance"}), "bad_message", 4400),
        (HELLO, bytes([0x41, 1, 0, 0]) + bytes(2 * 1024 * 1024), "too_large", 4413),
    ],
)
async def test_websocket_protocol_errors_get_an_error_message_and_a_close_code(first, then, code, close):
    async with live_server() as srv, aiohttp.ClientSession() as http:
        error, close_code = await ws_error(srv, http, first, then)
        assert error is not None and error["code"] == code and error["message"]
        assert close_code == close
        await eventually(lambda: srv.ctx.sessions.active == 0 and not srv.ctx.engine.sessions)
        await assert_serves_a_session(srv, http)


async def test_no_hello_in_time_or_an_idle_client_closes_with_4408():
    async with live_server(hello_timeout_s=0.3, ws_idle_timeout_s=0.6) as srv, aiohttp.ClientSession() as http:
        async with http.ws_connect(srv.ws_url) as ws:
            error, code = await read_until_close(ws)
            assert error["code"] == "hello_timeout" and code == 4408
        async with http.ws_connect(srv.ws_url) as ws:
            await ws.send_json(HELLO)
            error, code = await read_until_close(ws)  # reads frames, never sends anything
            assert error["code"] == "idle_timeout" and code == 4408
        await eventually(lambda: srv.ctx.sessions.active == 0)
        await assert_serves_a_session(srv, http)


async def test_malformed_offers_get_400_json_errors():
    async with live_server() as srv, aiohttp.ClientSession() as http:
        cases = [
            ("{not json", "bad_json"),
            (json.dumps({"type": "offer", "sdp": "v=0\r\nthis is not sdp\r\n"}), "bad_sdp"),
            (json.dumps({"type": "offer", "sdp": ""}), "bad_sdp"),
            (json.dumps({"type": "answer", "sdp": "v=0"}), "bad_request"),
            (json.dumps({"type": "offer", "sdp": "v=0\r\n", "speakers": 9}), "bad_request"),
            (json.dumps({"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"}), "bad_sdp"),
        ]
        for body, code in cases:
            async with http.post(srv.url + "/offer", data=body) as resp:
                assert resp.status == 400, body
                assert (await resp.json())["error"]["code"] == code, body
        async with http.post(srv.url + "/offer", json={"type": "offer", "sdp": "v=0\r\n", "avatar": "../x"}) as resp:
            assert resp.status == 400
        assert srv.ctx.sessions.active == 0 and not srv.ctx.engine.sessions
        await assert_serves_a_session(srv, http)


async def test_a_client_that_stops_reading_loses_frames_then_is_closed_with_4408():
    from ..helpers.server_app import BlockPatternGenerator

    # Big noisy frames fill the socket buffers quickly.
    gen = BlockPatternGenerator(size=(640, 480), noise=True)
    async with live_server(gen, ws_stall_timeout_s=1.0, ws_send_queue_frames=5) as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", int(srv.url.rsplit(":", 1)[1]))
        sock = writer.get_extra_info("socket")
        import socket as _socket

        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, 4096)
        writer.write(
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert b" 101 " in head
        hello = json.dumps({**HELLO, "video": {"quality": 100}}).encode()
        mask = b"\x01\x02\x03\x04"
        writer.write(bytes([0x81, 0x80 | len(hello)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(hello)))
        await writer.drain()
        reader._transport.pause_reading()  # stop reading, like a stuck client
        conn = None
        for _ in range(100):
            conns = [c for c in srv.ctx.connections if getattr(c, "frames_dropped", 0)]
            if conns:
                conn = conns[0]
                break
            await asyncio.sleep(0.05)
        assert conn is not None, "frames were never dropped for the stuck client"
        for _ in range(100):
            if not srv.ctx.connections:
                break
            await asyncio.sleep(0.05)
        assert not srv.ctx.connections and not srv.ctx.engine.sessions
        assert conn.frames_dropped > 0
        writer.close()
        metrics = srv.ctx.metrics.render().decode()
        assert 'infinitetalk_dropped_frames_total{reason="slow_client"}' in metrics
        assert 'infinitetalk_errors_total{code="client_not_reading"} 1.0' in metrics
        async with aiohttp.ClientSession() as http:
            await assert_serves_a_session(srv, http)


