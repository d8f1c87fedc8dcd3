"""The LiveKit launch path below the room: the agent-side plug-in's token and request, the launch endpoint.
(The worker it starts joins a LiveKit room, which cannot exist here: the endpoint gets a worker that records.)"""

import asyncio

import aiohttp
from aiohttp import web
from livekit import api

from client_demo.agents.livekit_launcher import build_launcher
from client_demo.agents.livekit_plugin import AVATAR_IDENTITY, InfiniteTalkAvatarSession

from ..helpers.server_app import free_port

KEY, SECRET = "devkey", "secret-of-at-least-32-characters-long"


async def test_the_plugin_mints_a_publish_on_behalf_token_the_launcher_starts_a_worker_with():
    plugin = InfiniteTalkAvatarSession("http://unused", livekit_url="wss://lk.example", api_key=KEY, api_secret=SECRET)
    body = plugin.launch_request("room-1", "agent-7")
    claims = api.TokenVerifier(KEY, SECRET).verify(body["token"])
    assert claims.identity == AVATAR_IDENTITY and claims.kind == "agent"
    assert claims.video.room == "room-1" and claims.video.room_join
    assert claims.attributes == {"lk.publish_on_behalf": "agent-7"}

    started: list[tuple[str, str, str]] = []
    release = asyncio.Event()

    async def worker(url: str, token: str, room: str) -> None:
        started.append((url, token, room))
        await release.wait()

    runner = web.AppRunner(build_launcher(worker, max_workers=1))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}/launch"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(url, json=body) as r:
                assert r.status == 202 and await r.json() == {"room_name": "room-1", "workers": 1}
            await asyncio.sleep(0.05)
            assert started == [("wss://lk.example", body["token"], "room-1")]
            async with http.post(url, json=body) as r:  # the limit: one worker
                assert r.status == 429
            for bad, says in ((b"{", "not JSON"), (b"[]", "JSON object"), (b'{"room_name": "r", "url": "wss://x"}',
                              '"token"'), (b'{"room_name": "r", "url": "ftp://x", "token": "t"}', "LiveKit server URL")):
                async with http.post(url, data=bad) as r:
                    assert r.status == 400 and says in (await r.json())["error"]["message"]
            release.set()
            await asyncio.sleep(0.05)
            async with http.post(url, json=body) as r:  # the first worker ended: room for another
                assert r.status == 202
    finally:
        await runner.cleanup()
