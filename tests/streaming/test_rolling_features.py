"""FlashTalk's rolling speech features: its streaming procedure, and a backend that reads no future audio."""

from __future__ import annotations

import dataclasses
from collections import deque

import numpy as np
import pytest
import torch

from model.audio import whole_clip_embedding
from streaming.features.rolling import RollingClipFeatures
from streaming.generator import Avatar, WindowJob

from ..helpers.engine_runs import read_wav
from ..helpers.tiny_infinitetalk import FAST_WINDOW, tiny_bundle, tiny_generator
from ..helpers.w2v_models import save_and_load, tiny_config

AVATAR = Avatar("face", np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), np.uint8))


@pytest.fixture(scope="module")
def wav2vec(tmp_path_factory):
    torch.set_num_threads(1)
    return save_and_load(tiny_config(), tmp_path_factory.mktemp("w2v"))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory.mktemp("tiny"))


def test_rolling_features_follow_flashtalks_streaming_procedure(wav2vec, speech_dir):
    """FlashTalk: a deque of `seconds` of zeros, extended by each chunk, re-encoded whole; the window is
    its last F frames, each reading frames f-2..f+2 clamped to the buffer's last frame."""
    speech = read_wav(speech_dir / "speech_en1.wav")
    seconds, frames, chunk = 2.0, 17, 12 * 640
    ours = RollingClipFeatures(wav2vec, seconds)
    buffer = deque([0.0] * int(seconds * 16000), maxlen=int(seconds * 16000))
    for k in range(4):
        piece = speech[k * chunk:(k + 1) * chunk]
        ours.push(piece)
        buffer.extend(piece.tolist())
        emb = whole_clip_embedding(wav2vec, np.array(buffer, np.float32))
        end = emb.shape[0]
        idx = torch.arange(end - frames, end)[:, None] + torch.arange(-2, 3)[None, :]
        expected = emb[idx.clamp(0, end - 1)]
        got = ours.window(frames)
        assert got.shape == (frames, 5, *emb.shape[1:])
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        # The newest frame has no future: its last two window slots repeat it.
        torch.testing.assert_close(got[-1, 3], got[-1, 2], rtol=0, atol=0)


def test_rolling_buffer_forgets_audio_older_than_its_length(wav2vec, speech_dir):
    speech = read_wav(speech_dir / "speech_en1.wav")
    a, b = RollingClipFeatures(wav2vec, 1.0), RollingClipFeatures(wav2vec, 1.0)
    a.push(speech[:16000])  # different first seconds ...
    b.push(-speech[16000:32000])
    for rolling in (a, b):
        rolling.push(speech[32000:48000])  # ... pushed out by the same last second
    torch.testing.assert_close(a.window(17), b.window(17), rtol=0, atol=0)
    with pytest.raises(ValueError, match="does not fit"):
        a.window(26)


def _job(gen, speech: np.ndarray, index: int, speaking: bool = True) -> WindowJob:
    spf, n = 640, gen.window.new_frames
    audio = speech[index * n * spf:(index + 1) * n * spf]
    return WindowJob("s", index, index * n, audio[None].astype(np.float32), speaking)


def test_rolling_backend_runs_a_window_on_its_own_audio_alone(bundle, speech_dir):
    speech = read_wav(speech_dir / "speech_en1.wav")[:16000 * 3]
    rolling = tiny_generator(bundle, audio_features="rolling", rolling_seconds=2.0)
    incremental = tiny_generator(bundle)
    assert rolling.window.lookahead_frames == 0 < incremental.window.lookahead_frames
    assert rolling.window.job_samples == FAST_WINDOW.new_frames * 640  # nothing past the window's last frame
    assert "no look-ahead" in rolling.description

    other = speech.copy()
    other[2 * rolling.window.new_frames * 640:] *= -0.5  # same speech up to the end of window 1, then not
    rows = []
    for clip in (speech, other):
        state = rolling.open_session("s", AVATAR)
        rows.append([rolling._window_rows(state, (rolling._push_audio(state, j), j)[1])
                     for j in (_job(rolling, clip, k) for k in range(3))])
    for k in (0, 1):  # windows that end before the clips differ see identical features
        torch.testing.assert_close(rows[0][k], rows[1][k], rtol=0, atol=0)
    assert not torch.equal(rows[0][2], rows[1][2])
    assert rows[0][0].shape == (1, FAST_WINDOW.frame_num, 5, *rows[0][0].shape[3:])


def test_rolling_idle_windows_use_the_features_of_a_silent_buffer(bundle):
    gen = tiny_generator(bundle, audio_features="rolling", rolling_seconds=2.0)
    duo = dataclasses.replace(AVATAR, speaker_boxes=((0, 0, 32, 64), (32, 0, 64, 64)))
    state = gen.open_session("s", duo, speakers=2)
    job = WindowJob("s", 0, 0, np.zeros((2, gen.window.job_samples), np.float32), speech=False)
    gen._push_audio(state, job)
    rows = gen._window_rows(state, job)
    silent = RollingClipFeatures(bundle.wav2vec2, 2.0).window(FAST_WINDOW.frame_num)
    assert rows.shape[0] == 2
    for s in range(2):
        torch.testing.assert_close(rows[s], silent, rtol=0, atol=0)


def test_rolling_settings_are_checked(bundle):
    with pytest.raises(ValueError, match="audio_features"):
        tiny_generator(bundle, audio_features="future")
    with pytest.raises(ValueError, match="shorter than a window"):
        tiny_generator(bundle, audio_features="rolling", rolling_seconds=0.5)
