"""Session isolation and limits: a failing session never takes others down; --max-sessions holds."""

import asyncio

import aiohttp

from ..helpers.failing_backend import FailsForOneAvatar, count_frames
from ..helpers.rtc_client import RtcTestClient
from ..helpers.server_app import live_server
from ..helpers.ws_checks import assert_serves_a_session, read_until_close


async def test_a_session_whose_generator_fails_gets_4500_and_the_other_keeps_streaming():
    gen = FailsForOneAvatar("other", fail_on_window=3)
    async with live_server(gen) as srv, aiohttp.ClientSession() as http:
        async with http.ws_connect(srv.ws_url) as healthy, http.ws_connect(srv.ws_url) as doomed:
            await healthy.send_json({"type": "hello", "version": 1})
            await doomed.send_json({"type": "hello", "version": 1, "avatar": "other"})
            assert (await healthy.receive_json())["type"] == "ready"
            assert (await doomed.receive_json())["type"] == "ready"
            healthy_log, doomed_log = [], []
            h = asyncio.create_task(count_frames(healthy, healthy_log))
            doomed_code = await asyncio.wait_for(count_frames(doomed, doomed_log), 5)
            n_at_failure = sum(m.type == aiohttp.WSMsgType.BINARY for m in healthy_log)
            await asyncio.sleep(1.0)
            n_later = sum(m.type == aiohttp.WSMsgType.BINARY for m in healthy_log)
            assert not healthy.closed
            await healthy.send_json({"type": "bye"})
            await asyncio.wait_for(h, 5)
        errors = [m.json() for m in doomed_log if m.type == aiohttp.WSMsgType.TEXT and m.json()["type"] == "error"]
        assert errors and errors[-1]["code"] == "generator_error" and "out of memory" in errors[-1]["message"]
        assert doomed_code == 4500
        assert any(m.type == aiohttp.WSMsgType.BINARY for m in doomed_log)  # it played before failing
        assert n_later - n_at_failure >= 20  # ~25 fps carried on for the healthy one
        assert 'infinitetalk_errors_total{code="generator_error"} 1.0' in srv.ctx.metrics.render().decode()
        await assert_serves_a_session(srv, http)


async def test_max_sessions_is_enforced_across_both_transports():
    async with live_server(max_sessions=2) as srv, aiohttp.ClientSession() as http:
        rtc = RtcTestClient(None)
        try:
            assert (await rtc.connect(srv.url))["status"] == 200
            # Connected before it hangs up: a peer that leaves during ICE sends nothing the server could
            # see, and is released by the ICE connect timeout instead (test_webrtc covers that).
            await rtc.wait_for(lambda: rtc.pc.connectionState == "connected", 10)
            async with http.ws_connect(srv.ws_url) as ws1:
                await ws1.send_json({"type": "hello", "version": 1})
                assert (await ws1.receive_json())["type"] == "ready"
                async with http.ws_connect(srv.ws_url) as ws2:
                    await ws2.send_json({"type": "hello", "version": 1})
                    error, code = await read_until_close(ws2)
                    assert error["code"] == "too_many_sessions" and code == 4429
                extra = RtcTestClient(None)
                try:
                    refused = await extra.connect(srv.url)
                    assert refused["status"] == 429 and refused["error"]["code"] == "too_many_sessions"
                finally:
                    await extra.close()
                await ws1.send_json({"type": "bye"})
        finally:
            await rtc.close()
        await asyncio.sleep(0.3)
        assert srv.ctx.sessions.active == 0
        await assert_serves_a_session(srv, http)


async def test_server_shutdown_closes_websockets_with_1001_and_every_session():
    async with live_server() as srv, aiohttp.ClientSession() as http:
        ws = await http.ws_connect(srv.ws_url)
        await ws.send_json({"type": "hello", "version": 1})
        assert (await ws.receive_json())["type"] == "ready"
        rtc = RtcTestClient(None)
        assert (await rtc.connect(srv.url))["status"] == 200
        await rtc.wait_for(lambda: rtc.video_times, 10)
        assert len(srv.ctx.engine.sessions) == 2
        log = []
        reader = asyncio.create_task(count_frames(ws, log))
        await srv.runner.cleanup()
        assert await asyncio.wait_for(reader, 5) == 1001
        assert not srv.ctx.engine.sessions and not srv.ctx.connections
        await rtc.wait_for(lambda: rtc.of_type("error"), 2)  # the peer was told why before it was closed
        assert rtc.of_type("error")[-1]["code"] == "stopping"
        await rtc.close()
