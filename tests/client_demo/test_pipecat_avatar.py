"""The pipecat video service in a real pipecat pipeline against a running lite server: TTS frames from a WAV in,
avatar video at 25 fps with its exact audio out; an interruption drops the rest of the utterance."""

import numpy as np
import pytest
from pipecat.frames.frames import (
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputImageRawFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
    UserStartedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.tests.utils import SleepFrame, run_test

from client_demo.agents.pipecat_avatar import InfiniteTalkVideoService, to_pcm16
from streaming.audio_input import PcmFormat

from ..helpers.audio_exact import assert_one_continuous_resampling, one_resampling, to_rate_stereo
from ..helpers.generated_speech import find_input, small_lite, speech_of
from ..helpers.pipecat_pipeline import TimedSink, tts_frames
from ..helpers.server_app import live_server


def _avatar_output(sink: TimedSink) -> tuple[list, np.ndarray]:
    """(the images with their times, the audio pushed with them as one int16 array); checks they alternate."""
    avatar = [(t, f) for t, f in sink.frames if isinstance(f, (OutputImageRawFrame, OutputAudioRawFrame))]
    images = avatar[0::2]
    audio = [f for _, f in avatar[1::2]]
    assert all(isinstance(f, OutputImageRawFrame) and f.sync_with_audio for _, f in images)
    assert all(isinstance(f, OutputAudioRawFrame) and f.sample_rate == 16000 and len(f.audio) == 1280 for f in audio)
    assert len(images) == len(audio)
    return images, np.concatenate([np.frombuffer(f.audio, np.int16) for f in audio])


async def test_tts_audio_becomes_avatar_video_at_25_fps_with_the_same_audio(speech_dir):
    speech = speech_of(speech_dir, 4.0)
    async with live_server(small_lite()) as srv:
        service = InfiniteTalkVideoService(url=srv.ws_url)
        sink = TimedSink()
        await run_test(Pipeline([service, sink]), frames_to_send=tts_frames(speech), start_timeout=5.0)
    assert not sink.of_type(TTSAudioRawFrame), "the TTS audio went downstream besides the avatar's"
    assert sink.of_type(TTSStoppedFrame)
    images, out = _avatar_output(sink)
    assert images[0][1].size == (128, 128) and len(images[0][1].image) == 128 * 128 * 3
    start = find_input(out, speech)
    np.testing.assert_array_equal(out[start : start + speech.size], speech)  # sample-exact through pipecat
    first, last = start // 640, (start + speech.size - 1) // 640
    assert last < len(images), "EndFrame closed the session before the utterance played out"
    times = np.array([t for t, _ in images[first : last + 1]])
    assert abs((len(times) - 1) / (times[-1] - times[0]) - 25.0) < 1.0
    kinds = [(e["type"], e.get("interrupted")) for e in service.playback_events]
    assert kinds == [("playback_started", None), ("playback_finished", False)]


@pytest.mark.parametrize("barge_in", [InterruptionFrame, UserStartedSpeakingFrame])
async def test_an_interruption_mid_utterance_clears_the_rest(speech_dir, barge_in):
    speech = speech_of(speech_dir, 8.0)
    async with live_server(small_lite()) as srv:
        service = InfiniteTalkVideoService(url=srv.ws_url)
        sink = TimedSink()
        frames = [*tts_frames(speech)[:-1], SleepFrame(2.5), barge_in(), SleepFrame(1.0)]
        await run_test(Pipeline([service, sink]), frames_to_send=frames, start_timeout=5.0)
    assert sink.of_type(barge_in), "the interruption must go on downstream (the transport clears too)"
    _, out = _avatar_output(sink)
    start = find_input(out, speech)
    heard = out[start:]
    n = int(np.flatnonzero(heard)[-1]) + 1  # input samples that came out
    np.testing.assert_array_equal(heard[:n], speech[:n])
    assert 1.0 * 16000 < n < 3.0 * 16000, n / 16000  # about 2 s of 8 were played, the rest dropped
    (finished,) = [e for e in service.playback_events if e["type"] == "playback_finished"]
    assert finished["interrupted"] is True
    assert 0 <= finished["position_samples"] - n <= 3 * 640  # what the server played, less what was on the wire


async def test_tts_audio_at_24_khz_comes_back_as_one_continuous_resampling_per_utterance(speech_dir):
    speech = speech_of(speech_dir, 2.0)
    pcm24 = (to_rate_stereo(speech / 32768.0, 24000).reshape(-1, 2)[:, 0]).copy()
    expected = np.frombuffer(to_pcm16(one_resampling(pcm24, PcmFormat(24000, 1, "s16"))), np.int16)
    async with live_server(small_lite()) as srv:
        service = InfiniteTalkVideoService(url=srv.ws_url)
        sink = TimedSink()
        step = 2400  # 100 ms at 24 kHz
        frames = [TTSAudioRawFrame(audio=pcm24[i : i + step].tobytes(), sample_rate=24000, num_channels=1)
                  for i in range(0, pcm24.size, step)]
        await run_test(Pipeline([service, sink]), frames_to_send=[*frames, TTSStoppedFrame()], start_timeout=5.0)
    _, out = _avatar_output(sink)
    assert_one_continuous_resampling(out, expected, "24 kHz TTS")  # the tail too: flushed at TTSStoppedFrame
