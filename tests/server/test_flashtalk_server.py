"""`serve --weights <SoulX-FlashTalk folder>` without --preset: detected, described, and live over the websocket."""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np
import pytest
import torch

from server.cli import make_generator, parser

from ..helpers.server_app import WsLog, live_server, read_wav, ws_receive_all, ws_send_realtime
from ..helpers.tiny_flashtalk import tiny_flashtalk_root


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    torch.set_num_threads(1)
    return tiny_flashtalk_root(tmp_path_factory.mktemp("tiny-flashtalk"))


async def test_flashtalk_weights_serve_a_live_websocket_session(root, speech_dir):
    args = parser().parse_args(["serve", "--backend", "infinitetalk", "--weights", str(root), "--size", "32x32",
                                "--seed", "2"])
    assert args.preset is None
    gen = await asyncio.to_thread(make_generator, args)
    assert gen is not None and gen.window.new_frames == 28
    speech = read_wav(speech_dir / "speech_de1.wav")[: 16000 * 2]
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
                # 28-frame windows plus the wav2vec2 look-ahead: wait until all the speech has come back.
                want = np.count_nonzero(speech)
                for _ in range(200):
                    if sum(np.count_nonzero(f.pcm) for f in log.frames) >= want:
                        break
                    await asyncio.sleep(0.1)
                await ws.send_json({"type": "bye"})
                await asyncio.wait_for(receiver, 15)
    desc = info["backend_description"]
    assert "SoulX-FlashTalk" in desc and "preset flashtalk" in desc and "33 frames (5 motion), 4 steps" in desc
    assert ready["backend"] == "infinitetalk" and ready["window_frames"] == 28
    assert (ready["width"], ready["height"]) == (32, 32)
    frames = log.frames
    assert [f.index for f in frames] == list(range(len(frames)))
    assert any(f.speech for f in frames) and not log.json("error")
    out = np.concatenate([f.pcm for f in frames])
    np.testing.assert_array_equal(out[np.flatnonzero(out)], speech[np.flatnonzero(speech)])
