"""The lite backend animates: mouth with speech, life when idle, deterministic, seamless windows."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from streaming.avatars import default_avatar
from streaming.backends.lite import LiteGenerator, LiteSettings
from streaming.generator import Generator, WindowJob
from tests.helpers.lite import read_wav_16k, region_motion, run_clip

SIZE = 256  # half size keeps the suite fast; the 512 default is covered by the shape test


@pytest.fixture(scope="module")
def avatar():
    return default_avatar()


@pytest.fixture(scope="module")
def gen():
    return LiteGenerator(LiteSettings(width=SIZE, height=SIZE))


@pytest.fixture(scope="module")
def speech(speech_dir):
    return read_wav_16k(speech_dir / "speech_en1.wav")[: 16_000 * 4]


@pytest.fixture(scope="module")
def silence(speech_dir):
    return read_wav_16k(speech_dir / "silence_3s.wav")


def test_is_a_generator_labelled_as_not_infinitetalk(caplog):
    with caplog.at_level(logging.INFO):
        g = LiteGenerator()
    assert isinstance(g, Generator)
    assert g.name == "lite"
    assert "not" in g.description.lower() and "infinitetalk" in g.description.lower()
    assert g.description in caplog.text


def test_default_window_is_short_with_one_frame_lookahead():
    g = LiteGenerator()
    assert g.window.new_frames <= 8 and g.window.lookahead_frames == 1 and g.window.fps == 25
    assert g.window.samples_per_frame == 640


def test_frames_are_uint8_of_output_size_and_count(avatar):
    g = LiteGenerator()
    assert g.output_size(avatar) == (512, 512)
    st = g.open_session("shape", avatar)
    job = WindowJob("shape", 0, 0, np.zeros((1, g.window.job_samples), np.float32), speech=False)
    frames = list(g.generate(st, job))
    assert len(frames) == g.window.new_frames
    for f in frames:
        assert f.dtype == np.uint8 and f.shape == (512, 512, 3)
    assert frames[0] is not frames[1] and not np.shares_memory(frames[0], frames[1])
    g.close_session(st)


def test_wrong_audio_length_is_a_clear_error(gen, avatar):
    st = gen.open_session("bad", avatar)
    job = WindowJob("bad", 0, 0, np.zeros((1, 100), np.float32), speech=True)
    with pytest.raises(ValueError, match="expected \\[speakers"):
        list(gen.generate(st, job))


def test_mouth_moves_much_more_during_speech_than_silence(gen, avatar, speech, silence):
    st_speech = gen.open_session("s", avatar)
    st_idle = gen.open_session("s", avatar)
    box = st_speech.faces[0].geom.mouth_box()
    talking = region_motion(run_clip(gen, st_speech, speech, speech=True), box).mean()
    idle = region_motion(run_clip(gen, st_idle, silence, speech=False), box).mean()
    assert talking > 4.0 * idle, (talking, idle)
    assert talking > 2.0  # grey levels per pixel per frame: a visible opening, not noise


def test_mouth_opening_follows_loudness(gen, avatar, speech):
    st = gen.open_session("o", avatar)
    spf = gen.window.samples_per_frame
    frames = run_clip(gen, st, speech, speech=True)
    box = st.faces[0].geom.mouth_box()
    x0, y0, x1, y1 = box
    # Darkness added inside the mouth box (the interior fill) vs the avatar at rest.
    rest = st.frames[0][y0:y1, x0:x1].astype(np.float32).mean()
    dark = rest - frames[:, y0:y1, x0:x1].astype(np.float32).mean(axis=(1, 2, 3))
    rms = np.sqrt((speech[: len(frames) * spf].reshape(-1, spf) ** 2).mean(axis=1))
    loud, quiet = rms > np.percentile(rms, 70), rms < np.percentile(rms, 20)
    assert dark[loud].mean() > dark[quiet].mean() + 3.0, (dark[loud].mean(), dark[quiet].mean())


def test_idle_keeps_moving_and_is_never_black(gen, avatar, silence):
    st = gen.open_session("idle", avatar)
    frames = run_clip(gen, st, np.concatenate([silence, silence]), speech=False)  # 6 s
    step = np.abs(np.diff(frames.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))
    assert (step > 0).mean() > 0.9, "idle frames should keep changing (sway)"
    assert np.abs(frames[-1].astype(np.float32) - frames[0]).mean() > 0.05
    assert frames.reshape(len(frames), -1).mean(axis=1).min() > 40
    assert frames.reshape(len(frames), -1).max(axis=1).min() > 128
    # At least one blink in 6 s (intervals are 2-6 s): the eye region changes sharply at some point.
    eyes = st.faces[0].geom.eyes
    ex0 = int(min(e[0] - e[2] / 2 for e in eyes))
    ex1 = int(max(e[0] + e[2] / 2 for e in eyes))
    ey0, ey1 = int(min(e[1] for e in eyes) - 8), int(max(e[1] for e in eyes) + 8)
    eye_motion = region_motion(frames, (ex0, ey0, ex1, ey1))
    assert eye_motion.max() > 5.0 * np.median(eye_motion), "expected a blink in 6 s of idling"


def test_same_seed_same_frames_and_other_seed_differs(avatar, speech):
    short = speech[: 16_000]
    runs = []
    for seed in (7, 7, 8):
        g = LiteGenerator(LiteSettings(width=SIZE, height=SIZE, seed=seed))
        runs.append(run_clip(g, g.open_session("det", avatar), short, speech=True))
    assert np.array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_no_jump_at_window_boundaries(gen, avatar, speech):
    st = gen.open_session("seams", avatar)
    frames = run_clip(gen, st, speech, speech=True)
    step = np.abs(np.diff(frames.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))  # step[i]: i -> i+1
    n = gen.window.new_frames
    at_boundary = np.array([(i + 1) % n == 0 for i in range(len(step))])
    assert step[at_boundary].mean() < 1.5 * step[~at_boundary].mean()
    assert step[at_boundary].max() <= step[~at_boundary].max() * 1.25


def test_window_length_does_not_change_the_animation(avatar, speech):
    """Frames are a function of time and audio only: 2-frame and 8-frame windows agree."""
    clip = speech[: 16_000 * 2]
    outs = []
    for nf in (2, 8):
        g = LiteGenerator(LiteSettings(width=SIZE, height=SIZE, new_frames=nf))
        outs.append(run_clip(g, g.open_session("w", avatar), clip, speech=True))
    m = min(len(o) for o in outs)
    assert np.abs(outs[0][:m].astype(np.int16) - outs[1][:m]).max() <= 1
