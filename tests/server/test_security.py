"""Access control (issue 5): token on HTTP and websocket, browser origins, DNS-rebinding Host check,
and that no token ever reaches a log."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest

from server.security import token_matches

from ..helpers.security_checks import TOKEN, status, ws_outcome, ws_session
from ..helpers.server_app import live_server
from ..helpers.ws_checks import assert_serves_a_session, eventually, read_until_close

WRONG = "wrong-token-guess-9876543210"
HELLO = {"type": "hello", "version": 1}






async def refused_before_hello(http, url, **kw) -> tuple[str | None, int | None]:
    async with http.ws_connect(url, **kw) as ws:
        return await read_until_close(ws)




async def test_a_token_guards_every_costly_route_and_the_open_ones_stay_open():
    async with live_server(token=TOKEN, rate_limit_burst=1000) as srv, aiohttp.ClientSession() as http:
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        wrong = {"Authorization": f"Bearer {WRONG}"}
        for path in ("/healthz", "/api/info", "/", "/static/app.js"):
            assert (await status(http, "GET", srv.url + path))[0] == 200, path
        async with http.get(srv.url + "/api/info") as r:
            info = await r.json()
        assert info["auth_required"] is True and info["ice_servers"] == []
        for method, path in (("GET", "/metrics"), ("GET", "/api/avatars"), ("GET", "/api/avatars/test/thumbnail"),
                             ("POST", "/offer"), ("POST", "/api/avatars?name=x")):
            for headers in ({}, wrong, {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}):
                assert await status(http, method, srv.url + path, headers=headers) == (401, "unauthorized"), (path, headers)
        async with http.get(srv.url + "/metrics") as r:
            assert r.headers["WWW-Authenticate"] == "Bearer"
        assert (await status(http, "GET", srv.url + "/metrics", headers=bearer))[0] == 200
        assert (await status(http, "GET", srv.url + "/metrics", headers={"Authorization": f"bearer  {TOKEN} "}))[0] == 200
        assert (await status(http, "GET", srv.url + "/api/avatars", headers=bearer))[0] == 200
        # ?token= is for websockets only (browsers cannot set their headers); HTTP needs the header.
        assert (await status(http, "GET", srv.url + f"/metrics?token={TOKEN}"))[0] == 401

        assert await ws_outcome(http, srv.ws_url) == ("closed", ("unauthorized", 4401))
        assert await ws_outcome(http, srv.ws_url + f"?token={WRONG}") == ("closed", ("unauthorized", 4401))
        assert await ws_outcome(http, srv.ws_url, protocols=("infinitetalk.v1", f"token.{WRONG}")) == \
            ("closed", ("unauthorized", 4401))
        await ws_session(http, srv.ws_url, headers=bearer)
        await ws_session(http, srv.ws_url + f"?token={TOKEN}")
        # A browser offers the token as a subprotocol next to ours; only ours is ever echoed back.
        assert await ws_session(http, srv.ws_url, protocols=("infinitetalk.v1", f"token.{TOKEN}")) == "infinitetalk.v1"
        await eventually(lambda: srv.ctx.sessions.active == 0)
        metrics = srv.ctx.metrics.render().decode()
        assert 'infinitetalk_errors_total{code="unauthorized"}' in metrics


async def test_tokens_never_appear_in_the_server_logs(caplog):
    caplog.set_level(logging.DEBUG)
    async with live_server(token=TOKEN, access_log=False) as srv, aiohttp.ClientSession() as http:
        for token in (TOKEN, WRONG):
            await status(http, "GET", srv.url + "/metrics", headers={"Authorization": f"Bearer {token}"})
            await status(http, "POST", srv.url + "/offer", headers={"Authorization": f"Bearer {token}"}, data="{bad")
            await ws_outcome(http, srv.ws_url + f"?token={token}") if token == WRONG else \
                await ws_session(http, srv.ws_url + f"?token={token}")
            # Only the token subprotocol, none we know: aiohttp would log the list it does not know.
            async with http.ws_connect(srv.ws_url, protocols=(f"token.{token}",)) as ws:
                if token == TOKEN:
                    await ws.send_json(HELLO)
                    assert (await asyncio.wait_for(ws.receive_json(), 5))["type"] == "ready"
                    await ws.send_json({"type": "bye"})
                await read_until_close(ws)
        await asyncio.sleep(0.2)
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert len(caplog.records) > 5  # the server did log (sessions, refusals)
    assert TOKEN not in text and WRONG not in text


async def test_foreign_browser_origins_are_refused_with_403_or_4403():
    async with live_server(token=TOKEN, allow_origins=("https://app.example.com",)) as srv, \
            aiohttp.ClientSession() as http:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        evil = {**auth, "Origin": "https://evil.example"}
        assert await ws_outcome(http, srv.ws_url, headers=evil) == ("closed", ("forbidden_origin", 4403))
        assert await ws_outcome(http, srv.ws_url, headers={**auth, "Origin": "null"}) == \
            ("closed", ("forbidden_origin", 4403))
        assert await status(http, "POST", srv.url + "/offer", headers=evil, json={}) == (403, "forbidden_origin")
        assert await status(http, "POST", srv.url + "/api/avatars?name=x", headers=evil, data=b"x") == \
            (403, "forbidden_origin")
        # Reads are not guarded by Origin (the browser's CORS keeps their answers from the page).
        assert (await status(http, "GET", srv.url + "/api/avatars", headers=evil))[0] == 200
        # The page's own origin, and the allowed one, get in.
        await ws_session(http, srv.ws_url, headers={**auth, "Origin": srv.url})
        await ws_session(http, srv.ws_url, headers={**auth, "Origin": "https://app.example.com"})
        assert await status(http, "POST", srv.url + "/offer", headers={**auth, "Origin": srv.url}, json={}) == \
            (400, "bad_request")  # past the checks: a malformed offer
    async with live_server(allow_origins=("*",)) as srv, aiohttp.ClientSession() as http:
        await ws_session(http, srv.ws_url, headers={"Origin": "https://anywhere.example"})


async def test_without_a_token_only_requests_addressed_to_localhost_are_answered():
    """DNS rebinding: a page on evil.example re-points its name at 127.0.0.1; its requests then carry
    Host: evil.example and must not reach a token-less loopback server."""
    async with live_server() as srv, aiohttp.ClientSession() as http:
        port = srv.url.rsplit(":", 1)[1]
        for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}"):
            assert await status(http, "GET", srv.url + "/api/avatars", headers={"Host": host}) == \
                (403, "forbidden_host"), host
            assert await ws_outcome(http, srv.ws_url, headers={"Host": host, "Origin": f"http://{host}"}) == \
                ("closed", ("forbidden_host", 4403))
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", f"LOCALHOST:{port}"):
            assert (await status(http, "GET", srv.url + "/api/avatars", headers={"Host": host}))[0] == 200, host
        await assert_serves_a_session(srv, http)
    async with live_server(token=TOKEN) as srv, aiohttp.ClientSession() as http:
        headers = {"Host": "avatar.example.org", "Authorization": f"Bearer {TOKEN}"}
        assert (await status(http, "GET", srv.url + "/api/avatars", headers=headers))[0] == 200


@pytest.mark.parametrize(("candidates", "ok"), [
    ([TOKEN], True), ([WRONG], False), ([], False), ([WRONG, TOKEN], True), ([TOKEN[:-1]], False),
    ([TOKEN + "x"], False), (["\udcff" + TOKEN[1:]], False), (["ünïcode"], False),
])
def test_token_comparison(candidates, ok):
    assert token_matches(candidates, TOKEN) is ok
