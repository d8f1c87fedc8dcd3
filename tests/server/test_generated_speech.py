"""Generated speech (a TTS engine's) over the websocket, end to end on loopback with the lite backend:
audio faster than real time in segments, paced frames with the exact audio, playback events, interrupts."""

import asyncio
import json

import aiohttp
import numpy as np

from ..helpers.generated_speech import GENERATED_HELLO, find_input, send_fast, small_lite, speech_of
from ..helpers.server_app import WsLog, live_server, ws_receive_all
from ..helpers.ws_checks import HELLO, read_until_close


async def _open(http, srv, hello=GENERATED_HELLO):
    ws = await http.ws_connect(srv.ws_url)
    await ws.send_json(hello)
    ready = await asyncio.wait_for(ws.receive_json(), 5)
    assert ready["type"] == "ready", ready
    return ws, ready


async def _until(log: WsLog, predicate, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.02)


def _event_position(log: WsLog, kind: str) -> int:
    """How many frames were received before the first `kind` event."""
    frames = 0
    for item in log.items:
        if item[0] == "frame":
            frames += 1
        elif item[1].get("type") == kind:
            return frames
    raise AssertionError(f"no {kind} event")


async def test_twenty_seconds_of_speech_sent_within_a_second_play_at_25_fps_sample_exact(speech_dir):
    speech = speech_of(speech_dir, 20.0)
    async with live_server(small_lite()) as srv, aiohttp.ClientSession() as http:
        ws, ready = await _open(http, srv)
        assert ready["input"] == "generated" and ready["max_buffer_s"] == 300.0
        log = WsLog([])
        loop = asyncio.get_running_loop()
        receiver = asyncio.create_task(ws_receive_all(ws, log, loop.time))
        took = await send_fast(ws, speech)
        await ws.send_json({"type": "segment_end"})
        assert took < 1.0, f"sending 20 s took {took:.2f} s"
        await _until(log, lambda: log.json("playback_finished"), 30)
        await ws.send_json({"type": "end_session"})  # nothing left to play: closes normally at once
        await asyncio.wait_for(receiver, 5)
    assert log.close_code == 1000
    assert not log.json("warning") and not log.json("error"), (log.json("warning"), log.json("error"))
    buffered = [m["buffered_s"] for m in log.json("buffer")]
    assert max(buffered) > 15.0, "flow control never showed the burst buffered"
    frames = log.frames
    assert [f.index for f in frames] == list(range(len(frames)))
    out = np.concatenate([f.pcm for f in frames])
    start = find_input(out, speech)
    np.testing.assert_array_equal(out[start : start + speech.size], speech)  # no sample added, lost or changed
    first, last = start // 640, (start + speech.size - 1) // 640
    assert not any(f.filler for f in frames[first : last + 1]), "the playout ran dry mid-segment"
    times = np.array(log.frame_times[first : last + 1])
    fps = (len(times) - 1) / (times[-1] - times[0])
    assert abs(fps - 25.0) < 0.5, fps
    assert _event_position(log, "playback_started") == first + 1  # right after the segment's first frame
    assert _event_position(log, "playback_finished") == last + 1  # right after its last frame
    (finished,) = log.json("playback_finished")
    assert finished == {"type": "playback_finished", "segment": 0, "position_s": 20.0,
                        "position_samples": speech.size, "interrupted": False}


async def test_an_interrupt_five_seconds_in_stops_within_a_window_and_reports_the_position(speech_dir):
    speech = speech_of(speech_dir, 10.0)
    async with live_server(small_lite()) as srv, aiohttp.ClientSession() as http:
        ws, ready = await _open(http, srv)
        log = WsLog([])
        loop = asyncio.get_running_loop()
        receiver = asyncio.create_task(ws_receive_all(ws, log, loop.time))
        await send_fast(ws, speech)
        await ws.send_json({"type": "segment_end"})
        await _until(log, lambda: log.json("playback_started"), 10)
        started_at = len(log.frames)
        await _until(log, lambda: len(log.frames) >= started_at + 125, 10)  # 5 s of it played
        await ws.send_json({"type": "interrupt"})
        await _until(log, lambda: log.json("playback_finished"), 5)
        await asyncio.sleep(0.5)
        await ws.send_json({"type": "bye"})
        await asyncio.wait_for(receiver, 5)
    (finished,) = log.json("playback_finished")
    assert finished["interrupted"] is True and finished["segment"] == 0
    assert 4.9 <= finished["position_s"] <= 5.5, finished
    before = _event_position(log, "playback_finished")
    frames = log.frames
    out = np.concatenate([f.pcm for f in frames[:before]])
    start = find_input(out, speech)
    played = out[start:]
    n = finished["position_samples"]
    np.testing.assert_array_equal(played[:n], speech[:n])  # the position is exactly what was heard
    assert not played[n:].any()
    window = ready["window_frames"]
    after = frames[before:]
    assert sum(f.pcm.any() for f in after) <= window, "speech went on for more than a window"
    assert all(not f.pcm.any() for f in after[window:])
    assert after, "the session stopped making frames"


async def test_a_burst_over_the_bound_is_refused_with_a_clear_error_and_the_session_goes_on(speech_dir):
    speech = speech_of(speech_dir, 4.0)
    async with live_server(small_lite(), generated_buffer_s=2.0) as srv, aiohttp.ClientSession() as http:
        ws, ready = await _open(http, srv)
        assert ready["max_buffer_s"] == 2.0
        await send_fast(ws, speech, chunk_s=1.0)
        error = None
        while error is None:
            msg = await asyncio.wait_for(ws.receive(), 5)
            if msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data)["type"] == "error":
                error = json.loads(msg.data)
        assert error["code"] == "buffer_full" and "2 s" in error["message"]
        await ws.send_json({"type": "bye"})
        _, code = await read_until_close(ws)
        assert code == 1000


async def test_audio_after_end_session_is_a_protocol_error(speech_dir):
    speech = speech_of(speech_dir, 2.0)
    async with live_server(small_lite()) as srv, aiohttp.ClientSession() as http:
        ws, _ = await _open(http, srv)
        await send_fast(ws, speech)
        await ws.send_json({"type": "end_session"})
        await send_fast(ws, speech[:320])
        error, code = await read_until_close(ws)
        assert (error["code"], code) == ("audio_after_end", 4400)


async def test_malformed_segment_markers_and_modes_get_clear_errors(speech_dir):
    async with live_server(small_lite()) as srv, aiohttp.ClientSession() as http:
        ws, _ = await _open(http, srv)
        await ws.send_json({"type": "segment_end", "segment": "one"})
        error, code = await read_until_close(ws)
        assert (error["code"], code) == ("bad_message", 4400) and "segment_end takes no fields" in error["message"]

        ws, ready = await _open(http, srv, HELLO)  # a live session has no segments
        assert ready["input"] == "live" and "max_buffer_s" not in ready
        await ws.send_json({"type": "segment_end"})
        error, code = await read_until_close(ws)
        assert (error["code"], code) == ("bad_message", 4400) and "unknown message type 'segment_end'" in error["message"]

        for hello, says in (({**HELLO, "input": "tts"}, "'input' must be"),
                            ({**GENERATED_HELLO, "speakers": 2}, "one speaker")):
            async with http.ws_connect(srv.ws_url) as ws:
                await ws.send_json(hello)
                error, code = await read_until_close(ws)
                assert (error["code"], code) == ("bad_hello", 4400) and says in error["message"]

        async with http.post(srv.url + "/offer", json={"type": "offer", "sdp": "v=0", "input": 1}) as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == "bad_request"
