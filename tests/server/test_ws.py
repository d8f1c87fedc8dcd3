"""Websocket protocol end to end on loopback: paced frames, exact audio, sync fingerprints, interrupt."""

import asyncio
import math

import aiohttp
import cv2
import numpy as np

from ..helpers.server_app import (
    BlockPatternGenerator,
    WsLog,
    audio_code,
    image_code,
    live_server,
    read_wav,
    ws_receive_all,
    ws_send_realtime,
)


def decode_jpeg(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, "frame is not a decodable JPEG"
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


async def test_websocket_streams_25fps_frames_whose_audio_is_the_input_delayed_and_matches_the_image(speech_dir):
    speech = read_wav(speech_dir / "speech_en1.wav")[: 16000 * 3]
    async with live_server(BlockPatternGenerator(new_frames=4, delay_s=0.01)) as srv:
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(srv.ws_url) as ws:
                await ws.send_json({"type": "hello", "version": 1, "video": {"quality": 95}})
                ready = await asyncio.wait_for(ws.receive_json(), 5)
                assert ready["type"] == "ready" and ready["version"] == 1
                assert (ready["fps"], ready["sample_rate"], ready["samples_per_frame"]) == (25, 16000, 640)
                assert (ready["width"], ready["height"], ready["window_frames"]) == (64, 48, 4)
                loop = asyncio.get_running_loop()
                log = WsLog([])
                receiver = asyncio.create_task(ws_receive_all(ws, log, loop.time))
                t_start = loop.time()
                await asyncio.sleep(0.3)
                await ws_send_realtime(ws, speech)
                await asyncio.sleep(0.8)
                await ws.send_json({"type": "bye"})
                await asyncio.wait_for(receiver, 5)
                elapsed = loop.time() - t_start
                assert log.close_code == 1000

    frames = log.frames
    assert len(frames) >= 0.9 * elapsed * 25
    assert [f.index for f in frames] == list(range(len(frames)))
    times = np.array(log.frame_times[5:])
    assert abs((len(times) - 1) / (times[-1] - times[0]) - 25) < 1.0
    mismatched = [
        f.index for f in frames if not f.filler and abs(image_code(decode_jpeg(f.jpeg)) - audio_code(f.pcm / 32768.0)) > 1
    ]
    assert not mismatched, f"frames whose image was not made from their audio: {mismatched[:10]}"
    assert all(f.pcm.size == 640 for f in frames)
    # The output audio is the input, sample-exact and in order. (If the sender fell behind, the
    # engine may pad a window with silence mid-utterance, so compare the non-zero samples.)
    out = np.concatenate([f.pcm for f in frames])
    np.testing.assert_array_equal(out[np.flatnonzero(out)], speech[np.flatnonzero(speech)])
    speech_frames = [f for f in frames if f.speech]
    timed = [f.latency for f in speech_frames if math.isfinite(f.latency)]
    assert len(timed) >= 0.8 * len(speech_frames) and all(0 < x < 1.5 for x in timed)  # flush padding has none
    assert all(math.isnan(f.latency) for f in frames if not f.pcm.any())  # no input audio, no latency
    assert math.isnan(frames[0].latency) and not frames[0].speech  # idle before anyone spoke
    stats = log.json("stats")
    assert len(stats) >= 4
    last = stats[-1]
    assert isinstance(last["latency_s"], float) and isinstance(last["latency_mean_s"], float)
    assert last["backend"] == "pattern" and last["frames"] >= len(frames) - 15
    assert [m["state"] for m in log.json("state")][:1] == ["idle"]
    assert "speaking" in [m["state"] for m in log.json("state")]


async def test_interrupt_over_websocket_returns_to_idle_within_one_window(speech_dir):
    speech = read_wav(speech_dir / "speech_en1.wav")[: 16000 * 4]
    async with live_server(BlockPatternGenerator(new_frames=5)) as srv, aiohttp.ClientSession() as http:
        async with http.ws_connect(srv.ws_url) as ws:
            await ws.send_json({"type": "hello", "version": 1})
            assert (await ws.receive_json())["type"] == "ready"
            loop = asyncio.get_running_loop()
            log = WsLog([])
            receiver = asyncio.create_task(ws_receive_all(ws, log, loop.time))
            header = bytes([0x41, 1, 0, 0])
            for i in range(0, speech.size, 16000):  # 4 s at once: far more than plays soon
                await ws.send_bytes(header + speech[i : i + 16000].tobytes())
            for _ in range(300):
                if any(f.speech for f in log.frames):
                    break
                await asyncio.sleep(0.01)
            await ws.send_json({"type": "interrupt"})
            await asyncio.sleep(0.8)
            await ws.send_json({"type": "stats"})
            await asyncio.sleep(0.1)
            await ws.send_json({"type": "bye"})
            await asyncio.wait_for(receiver, 5)

    states = [m["state"] for m in log.json("state")]
    assert "interrupted" in states and states[-1] == "idle", states
    at = next(k for k, item in enumerate(log.items) if item[0] == "json" and item[1].get("state") == "interrupted")
    after = [item[1] for item in log.items[at:] if item[0] == "frame"]
    assert len(after) >= 15
    assert not any(f.speech for f in after[5:]), "speech frames continued more than one window after interrupt"
    assert [f.index for f in log.frames] == list(range(len(log.frames)))
    assert log.json("stats")[-1]["dropped_frames"] > 0


async def test_lite_backend_through_the_websocket_returns_the_input_speech_sample_exact(speech_dir):
    from streaming.avatars import default_avatar
    from streaming.backends.lite import LiteGenerator, LiteSettings

    speech = read_wav(speech_dir / "speech_de1.wav")[: 16000 * 3]
    gen = LiteGenerator(LiteSettings(width=256, height=256))
    async with live_server(gen, builtins={"astronaut": default_avatar}) as srv, aiohttp.ClientSession() as http:
        async with http.ws_connect(srv.ws_url) as ws:
            await ws.send_json({"type": "hello", "version": 1})
            ready = await asyncio.wait_for(ws.receive_json(), 10)
            assert ready["backend"] == "lite" and (ready["width"], ready["height"]) == (256, 256)
            log = WsLog([])
            receiver = asyncio.create_task(ws_receive_all(ws, log, asyncio.get_running_loop().time))
            await ws_send_realtime(ws, speech)
            await ws.send_json({"type": "end_of_speech"})
            await asyncio.sleep(0.8)
            await ws.send_json({"type": "bye"})
            await asyncio.wait_for(receiver, 5)
    frames = log.frames
    assert len(frames) >= 0.9 * 3.8 * 25
    assert [f.index for f in frames] == list(range(len(frames)))
    assert decode_jpeg(frames[-1].jpeg).shape == (256, 256, 3)
    out = np.concatenate([f.pcm for f in frames])
    np.testing.assert_array_equal(out[np.flatnonzero(out)], speech[np.flatnonzero(speech)])
    assert sum(f.speech for f in frames) >= 50
