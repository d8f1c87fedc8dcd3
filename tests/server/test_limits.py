"""Per-client limits (issue 5): request rate (token bucket), sessions per client address, WebRTC idle
timeout, STUN/TURN settings handed to the browser."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import time

import aiohttp
from aiohttp.test_utils import make_mocked_request

from server.config import IceServer, ServerConfig
from server.ice import rtc_configuration, turn_credential
from server.limits import RateLimiter, client_address

from ..helpers.rtc_client import RtcTestClient, WavMicrophone, resample_to_48k
from ..helpers.security_checks import TOKEN, status, ws_outcome, ws_session
from ..helpers.server_app import live_server, read_wav
from ..helpers.ws_checks import assert_serves_a_session, eventually, read_until_close

HELLO = {"type": "hello", "version": 1}


def test_token_bucket_allows_a_burst_then_the_refill_rate():
    now = [0.0]
    rl = RateLimiter(per_s=2.0, burst=3, clock=lambda: now[0])
    assert [rl.allow("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert abs(rl.allow("a") - 0.5) < 1e-9  # empty: one token comes in 0.5 s
    assert rl.allow("b") == 0.0  # another client has its own bucket
    now[0] += 0.5
    assert rl.allow("a") == 0.0 and rl.allow("a") > 0
    now[0] += 100
    assert [rl.allow("a") for _ in range(3)] == [0.0, 0.0, 0.0] and rl.allow("a") > 0  # never above burst


def test_idle_buckets_are_forgotten_when_many_clients_were_seen(monkeypatch):
    import server.limits as limits

    monkeypatch.setattr(limits, "MAX_TRACKED_CLIENTS", 100)
    now = [0.0]
    rl = RateLimiter(per_s=1.0, burst=2, clock=lambda: now[0])
    for i in range(100):
        rl.allow(f"10.0.0.{i}")
    now[0] += 10  # every bucket is full again
    rl.allow("192.0.2.1")
    assert len(rl) == 1


def test_client_address_trusts_forwarded_for_only_from_trusted_proxies():
    def req(peer: str, xff: str | None):
        headers = {"X-Forwarded-For": xff} if xff else {}
        r = make_mocked_request("GET", "/ws", headers=headers)
        return r.clone(remote=peer)

    assert client_address(req("198.51.100.7", "203.0.113.5"), ()) == "198.51.100.7"  # spoofed header ignored
    assert client_address(req("10.0.0.2", "203.0.113.5"), ("10.0.0.2",)) == "203.0.113.5"
    # The client may prepend anything; the entry the proxy appended is the last one.
    assert client_address(req("10.0.0.2", "1.2.3.4, 203.0.113.5"), ("10.0.0.2",)) == "203.0.113.5"
    assert client_address(req("10.0.0.2", "203.0.113.5, 10.0.0.3"), ("10.0.0.2", "10.0.0.3")) == "203.0.113.5"
    assert client_address(req("10.0.0.2", None), ("10.0.0.2",)) == "10.0.0.2"


async def test_a_client_over_its_request_rate_gets_429_or_4429_and_others_are_unaffected():
    async with live_server(rate_limit_burst=3, rate_limit_per_s=0.2, trusted_proxies=("127.0.0.1",)) as srv, \
            aiohttp.ClientSession() as http:
        for _ in range(2):
            await ws_session(http, srv.ws_url)
        assert (await status(http, "POST", srv.url + "/offer", data="{"))[0] == 400  # 3rd token: a bad offer
        assert await ws_outcome(http, srv.ws_url) == ("closed", ("rate_limited", 4429))
        async with http.post(srv.url + "/offer", data="{") as r:
            assert r.status == 429 and (await r.json())["error"]["code"] == "rate_limited"
            assert 1 <= int(r.headers["Retry-After"]) <= 5
        async with http.post(srv.url + "/api/avatars?name=x", data=b"x") as r:
            assert r.status == 429
        # Cheap reads are not rate limited.
        assert (await status(http, "GET", srv.url + "/api/avatars"))[0] == 200
        # Another client (here: behind the trusted proxy) still gets in.
        await ws_session(http, srv.ws_url, headers={"X-Forwarded-For": "203.0.113.9"})
        assert 'infinitetalk_errors_total{code="rate_limited"} 3.0' in srv.ctx.metrics.render().decode()


async def test_failed_token_guesses_are_rate_limited_too():
    async with live_server(token=TOKEN, rate_limit_burst=5, rate_limit_per_s=0.1) as srv, \
            aiohttp.ClientSession() as http:
        codes = [(await status(http, "GET", srv.url + "/metrics", headers={"Authorization": f"Bearer guess{i:04d}"}))
                 for i in range(8)]
        assert codes[:5] == [(401, "unauthorized")] * 5 and codes[5:] == [(429, "rate_limited")] * 3
        assert (await status(http, "GET", srv.url + "/healthz"))[0] == 200


async def test_one_client_cannot_hold_more_than_its_share_of_sessions():
    async with live_server(max_sessions=8, max_sessions_per_client=2, trusted_proxies=("127.0.0.1",)) as srv, \
            aiohttp.ClientSession() as http:
        held = [await http.ws_connect(srv.ws_url) for _ in range(2)]
        for ws in held:
            await ws.send_json(HELLO)
            assert (await asyncio.wait_for(ws.receive_json(), 5))["type"] == "ready"
        async with http.ws_connect(srv.ws_url) as ws:
            await ws.send_json(HELLO)
            error, code = await read_until_close(ws)
        assert error["code"] == "too_many_sessions" and "per client" in error["message"] and code == 4429
        rtc = RtcTestClient(None)
        try:
            refused = await rtc.connect(srv.url)
            assert refused["status"] == 429 and refused["error"]["code"] == "too_many_sessions"
        finally:
            await rtc.close()
        other = await ws_session(http, srv.ws_url, headers={"X-Forwarded-For": "203.0.113.9"})
        assert other is None
        for ws in held:
            await ws.send_json({"type": "bye"})
            await ws.close()
        await eventually(lambda: srv.ctx.sessions.active == 0 and srv.ctx.sessions.held_by("127.0.0.1") == 0)
        await assert_serves_a_session(srv, http)


async def test_an_idle_webrtc_session_is_closed_but_speech_keeps_it_open(speech_dir):
    speech = read_wav(speech_dir / "speech_en1.wav")[: 16000 * 4]
    async with live_server(rtc_idle_timeout_s=2.0) as srv:
        talker = RtcTestClient(WavMicrophone(resample_to_48k(speech)))
        silent = RtcTestClient(None)
        try:
            assert (await talker.connect(srv.url))["status"] == 200
            assert (await silent.connect(srv.url))["status"] == 200
            await talker.wait_for(lambda: talker.of_type("ready") and silent.of_type("ready"), 10)
            t0 = time.monotonic()
            await silent.wait_for(lambda: silent.of_type("error"), 6)
            assert silent.of_type("error")[0]["code"] == "idle_timeout"
            assert time.monotonic() - t0 < 5
            await eventually(lambda: len(srv.ctx.engine.sessions) == 1, 3)
            assert not talker.of_type("error")  # still talking (4 s of speech) after the silent one went
            await talker.wait_for(lambda: talker.of_type("error"), 8)  # speech over: idle 2 s later
            assert talker.of_type("error")[0]["code"] == "idle_timeout"
            assert time.monotonic() - t0 > 3.5
            await eventually(lambda: not srv.ctx.engine.sessions and srv.ctx.sessions.active == 0, 3)
        finally:
            await talker.close()
            await silent.close()


def test_turn_credentials_follow_the_coturn_rest_scheme():
    user, cred = turn_credential("shared-secret", "203.0.113.5", 3600, now=1_000_000)
    assert user == "1003600:203.0.113.5"
    expected = base64.b64encode(hmac.new(b"shared-secret", user.encode(), hashlib.sha1).digest()).decode()
    assert cred == expected
    cfg = ServerConfig(ice_servers=(IceServer(("stun:stun.example.org:3478",)),
                                    IceServer(("turn:turn.example.org:3478",))), turn_secret="shared-secret")
    servers = rtc_configuration(cfg).iceServers
    assert [s.urls for s in servers] == [["stun:stun.example.org:3478"], ["turn:turn.example.org:3478"]]
    assert servers[0].username is None and servers[1].username.endswith(":server")
    assert "shared-secret" not in repr(cfg) and "credential=" not in repr(IceServer(("turn:x",), "u", "pw"))


async def test_api_info_gives_stun_and_turn_servers_to_authorised_clients_only():
    ice = (IceServer(("stun:stun.example.org:3478",)), IceServer(("turn:turn.example.org:3478",), "user", "pw"))
    async with live_server(token=TOKEN, ice_servers=ice) as srv, aiohttp.ClientSession() as http:
        async with http.get(srv.url + "/api/info") as r:
            assert (await r.json())["ice_servers"] == []
        async with http.get(srv.url + "/api/info", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            servers = (await r.json())["ice_servers"]
        assert servers == [{"urls": ["stun:stun.example.org:3478"]},
                           {"urls": ["turn:turn.example.org:3478"], "username": "user", "credential": "pw"}]


async def test_with_named_tokens_each_token_is_a_client_wherever_it_connects_from(caplog):
    caplog.set_level(logging.INFO, logger="server.ws")
    alice, kiosk = "alice-token-0123456789", "kiosk-token-9876543210"
    async with live_server(tokens=(("alice", alice), ("kiosk", kiosk)), max_sessions=8, max_sessions_per_client=1,
                           trusted_proxies=("127.0.0.1",), rate_limit_burst=1000) as srv, \
            aiohttp.ClientSession() as http:
        assert await ws_outcome(http, srv.ws_url) == ("closed", ("unauthorized", 4401))
        held = await http.ws_connect(srv.ws_url + f"?token={alice}")
        await held.send_json(HELLO)
        assert (await asyncio.wait_for(held.receive_json(), 5))["type"] == "ready"
        assert srv.ctx.sessions.held_by("token:alice") == 1
        # The same token from another address is the same client: over its share.
        async with http.ws_connect(srv.ws_url + f"?token={alice}", headers={"X-Forwarded-For": "203.0.113.9"}) as ws:
            await ws.send_json(HELLO)
            error, code = await read_until_close(ws)
        assert error["code"] == "too_many_sessions" and code == 4429
        # Another token from the same address is another client.
        assert await ws_session(http, srv.ws_url + f"?token={kiosk}") is None
        await held.send_json({"type": "bye"})
        await held.close()
        await eventually(lambda: srv.ctx.sessions.active == 0)
        assert (await status(http, "GET", srv.url + "/metrics", headers={"Authorization": f"Bearer {kiosk}"}))[0] == 200
    assert "open for token:alice" in caplog.text and "open for token:kiosk" in caplog.text
    assert alice not in caplog.text and kiosk not in caplog.text
