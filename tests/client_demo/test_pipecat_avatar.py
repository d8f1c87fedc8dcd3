"""The pipecat video service in a real pipecat pipeline against a running lite server: TTS frames from a WAV in,
avatar video at 25 fps with its exact audio out; an interruption drops the rest of the utterance."""

import numpy as np
from pipecat.frames.frames import (
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputImageRawFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.tests.utils import SleepFrame, run_test

from client_demo.agents.pipecat_avatar import InfiniteTalkVideoService

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


async def test_an_interruption_mid_utterance_clears_the_rest(speech_dir):
    speech = speech_of(speech_dir, 8.0)
    async with live_server(small_lite()) as srv:
        service = InfiniteTalkVideoService(url=srv.ws_url)
        sink = TimedSink()
        frames = [*tts_frames(speech)[:-1], SleepFrame(2.5), InterruptionFrame(), SleepFrame(1.0)]
        await run_test(Pipeline([service, sink]), frames_to_send=frames, start_timeout=5.0)
    assert sink.of_type(InterruptionFrame), "the interruption must go on downstream (the transport clears too)"
    _, out = _avatar_output(sink)
    start = find_input(out, speech)
    heard = out[start:]
    n = int(np.flatnonzero(heard)[-1]) + 1  # input samples that came out
    np.testing.assert_array_equal(heard[:n], speech[:n])
    assert 1.0 * 16000 < n < 3.0 * 16000, n / 16000  # about 2 s of 8 were played, the rest dropped
    (finished,) = [e for e in service.playback_events if e["type"] == "playback_finished"]
    assert finished["interrupted"] is True
    assert 0 <= finished["position_samples"] - n <= 3 * 640  # what the server played, less what was on the wire
