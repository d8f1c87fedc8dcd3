"""One live websocket session against a generator: hello, speech sent in real time, end of speech, wait for
every speech sample to come back with the frames, bye. Returns what the server said."""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np

from .server_app import WsLog, live_server, ws_receive_all, ws_send_realtime


async def speech_session(gen, speech: np.ndarray, wait_rounds: int = 200) -> tuple[dict, dict, WsLog]:
    """(`/api/info`, the `ready` message, the log of frames and messages) of one session speaking `speech`."""
    async with live_server(gen) as srv:
        async with aiohttp.ClientSession() as http:
            async with http.get(srv.url + "/api/info") as r:
                info = await r.json()
            async with http.ws_connect(srv.ws_url) as ws:
                await ws.send_json({"type": "hello", "version": 1})
                ready = await asyncio.wait_for(ws.receive_json(), 30)
                log = WsLog([])
                receiver = asyncio.create_task(ws_receive_all(ws, log, asyncio.get_running_loop().time))
                await ws_send_realtime(ws, speech)
                await ws.send_json({"type": "end_of_speech"})
                want = np.count_nonzero(speech)  # windows plus any look-ahead: wait until all speech is back
                for _ in range(wait_rounds):
                    if sum(np.count_nonzero(f.pcm) for f in log.frames) >= want:
                        break
                    await asyncio.sleep(0.1)
                await ws.send_json({"type": "bye"})
                await asyncio.wait_for(receiver, 15)
    return info, ready, log
