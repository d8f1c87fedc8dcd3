"""The LiveKit `VideoGenerator` against the real livekit-agents classes and a running lite server (no LiveKit
server can run here, so the room itself is not tested): audio frames and `AudioSegmentEnd` in,
`rtc.VideoFrame` + `rtc.AudioFrame` out at 25 fps, `clear_buffer` mid-segment, the segment end reported."""

import asyncio
import time

import numpy as np
from livekit import rtc
from livekit.agents.voice.avatar import AudioSegmentEnd

from client_demo.agents.livekit_avatar import InfiniteTalkVideoGenerator

from ..helpers.generated_speech import find_input, small_lite, speech_of
from ..helpers.server_app import live_server


async def _feed(gen: InfiniteTalkVideoGenerator, pcm: np.ndarray, rate: int, end: bool = True) -> None:
    """Push `pcm` as 20 ms rtc.AudioFrames as fast as they come (a TTS), then the segment end."""
    step = rate // 50
    for i in range(0, pcm.size, step):
        chunk = pcm[i : i + step]
        await gen.push_audio(rtc.AudioFrame(chunk.tobytes(), rate, 1, chunk.size))
    if end:
        await gen.push_audio(AudioSegmentEnd())


async def _collect(gen: InfiniteTalkVideoGenerator, out: list, until) -> None:
    async for item in gen:
        out.append((time.monotonic(), item))
        if until(out):
            return


async def test_audio_in_video_and_the_same_audio_out_at_25_fps_and_the_segment_end_reported(speech_dir):
    speech = speech_of(speech_dir, 3.0)
    async with live_server(small_lite()) as srv:
        gen = InfiniteTalkVideoGenerator(srv.ws_url)
        ready = await gen.start()
        opts = gen.options()
        assert (opts.video_width, opts.video_height, opts.video_fps, opts.audio_sample_rate) == (
            ready["width"], ready["height"], 25, 16000)
        out: list = []
        collector = asyncio.create_task(_collect(gen, out, lambda o: isinstance(o[-1][1], AudioSegmentEnd)))
        await _feed(gen, speech, 16000)
        await asyncio.wait_for(collector, 15)
        await gen.aclose()
    items = [item for _, item in out]
    videos = [(t, x) for t, x in out if isinstance(x, rtc.VideoFrame)]
    audios = [x for x in items if isinstance(x, rtc.AudioFrame)]
    assert all(v.width == 128 and v.height == 128 and v.type == rtc.VideoBufferType.RGB24 for _, v in videos)
    assert all(a.sample_rate == 16000 and a.samples_per_channel == 640 for a in audios)
    for i, x in enumerate(items):  # every audio frame right after its video frame
        if isinstance(x, rtc.AudioFrame):
            assert isinstance(items[i - 1], rtc.VideoFrame)
    pcm = np.concatenate([np.frombuffer(a.data, np.int16) for a in audios])
    start = find_input(pcm, speech)
    assert start >= 0
    np.testing.assert_array_equal(pcm[start : start + speech.size], speech)
    assert not pcm[start + speech.size :].any()  # the last frame's padding, nothing more
    assert items.index(next(x for x in items if isinstance(x, AudioSegmentEnd))) > items.index(audios[-1])
    times = np.array([t for t, _ in videos[10:]])
    assert abs((len(times) - 1) / (times[-1] - times[0]) - 25.0) < 1.0
    kinds = [(e["type"], e.get("interrupted")) for e in gen.playback_events]
    assert kinds == [("playback_started", None), ("playback_finished", False)]


async def test_clear_buffer_mid_segment_drops_the_rest_and_24khz_input_is_resampled(speech_dir):
    speech16 = speech_of(speech_dir, 6.0)
    t16 = np.arange(speech16.size) / 16000
    t24 = np.arange(int(speech16.size * 1.5)) / 24000
    speech24 = np.interp(t24, t16, speech16).astype(np.int16)
    async with live_server(small_lite()) as srv:
        gen = InfiniteTalkVideoGenerator(srv.ws_url)
        await gen.start()
        out: list = []
        collector = asyncio.create_task(_collect(gen, out, lambda o: False))
        await _feed(gen, speech24, 24000)
        await asyncio.sleep(2.0)
        await gen.clear_buffer()
        await asyncio.sleep(1.0)
        collector.cancel()
        await asyncio.gather(collector, return_exceptions=True)
        await gen.aclose()
    items = [x for _, x in out]
    assert not any(isinstance(x, AudioSegmentEnd) for x in items)  # interrupted: the runner reports that itself
    (finished,) = [e for e in gen.playback_events if e["type"] == "playback_finished"]
    assert finished["interrupted"] is True and 1.0 < finished["position_s"] < 2.5
    audio_s = sum(a.samples_per_channel for a in items if isinstance(a, rtc.AudioFrame)) / 16000
    assert 1.0 < audio_s <= finished["position_s"] + 0.04, audio_s  # only what played before the clear
    tail = items[-20:]  # after the clear the avatar idles: video only
    assert tail and all(isinstance(x, rtc.VideoFrame) for x in tail)
