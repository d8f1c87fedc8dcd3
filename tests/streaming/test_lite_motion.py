"""Audio-to-mouth smoothing, blink schedule and head sway of the lite backend."""

from __future__ import annotations

import numpy as np
import pytest

from streaming.avatars import default_avatar
from streaming.backends.lite import LiteGenerator, LiteSettings
from streaming.backends.lite.audio_features import MouthDriver, frame_features
from streaming.backends.lite.motion import BlinkSchedule, HeadSway
from streaming.generator import Avatar, WindowJob
from tests.helpers.lite import read_wav_16k, region_motion, run_clip

SPF = 640


def _drive(audio: np.ndarray, speech: bool = True, driver: MouthDriver | None = None):
    d = driver or MouthDriver(frame_seconds=0.04)
    n = len(audio) // SPF
    return d.step(frame_features(audio, np.arange(n) * SPF, SPF), speech), d


def test_opening_is_smooth_bounded_and_closes_in_silence(speech_dir):
    speech = read_wav_16k(speech_dir / "speech_en1.wav")
    silence = read_wav_16k(speech_dir / "silence_3s.wav")
    (op, width, _), d = _drive(np.concatenate([speech, silence]))
    assert op.min() >= 0 and op.max() <= 1 and np.abs(width).max() <= 1
    talk = op[: len(speech) // SPF]
    assert talk.max() > 0.8 and talk.mean() > 0.25  # speech opens the mouth
    assert np.percentile(talk, 10) < 0.2  # ... and closes it between syllables/words
    assert op[-50:].max() < 0.01  # closed within 1 s of silence and stays closed
    assert np.abs(np.diff(op)).max() < 0.8  # attack smoothing: never a full open in one frame


def test_quiet_speaker_still_opens_the_mouth(speech_dir):
    speech = read_wav_16k(speech_dir / "speech_en2.wav")
    (loud, _, _), _ = _drive(speech)
    (quiet, _, _), _ = _drive(speech * 0.1)  # -20 dB
    # The running level adapts: after the first second the quiet take moves nearly as much.
    assert quiet[25:].mean() > 0.7 * loud[25:].mean()


def test_idle_windows_keep_the_mouth_closed_whatever_the_audio(speech_dir):
    speech = read_wav_16k(speech_dir / "speech_en1.wav")
    (op, _, _), _ = _drive(speech, speech=False)
    assert op.max() == 0.0


def test_blinks_are_short_and_2_to_6_seconds_apart():
    sched = BlinkSchedule(np.random.default_rng(3), (2.0, 6.0), 0.15)
    t = np.arange(0, 120, 0.001)
    b = sched.amount(t)
    assert b.max() == pytest.approx(1.0) and b.min() == 0.0
    on = np.flatnonzero(np.diff((b > 0).astype(int)) == 1)
    off = np.flatnonzero(np.diff((b > 0).astype(int)) == -1)
    gaps = np.diff(t[on])
    assert len(on) >= 120 / 6 - 1 and gaps.min() >= 2.0 - 1e-3 and gaps.max() <= 6.0 + 1e-3
    assert np.allclose(t[off] - t[on[: len(off)]], 0.15, atol=0.005)


def test_sway_is_small_smooth_and_livelier_with_speech():
    sway = HeadSway(np.random.default_rng(1))
    t = np.arange(0, 30, 0.04)
    idle = sway.pose(t, np.zeros_like(t))
    talk = sway.pose(t, np.ones_like(t))
    assert np.abs(idle).max() <= 1.0 and idle.std() > 0.1
    assert np.abs(np.diff(idle, axis=0)).max() < 0.1  # < 10% of the range per frame: smooth
    assert np.abs(np.diff(talk, axis=0)).mean() > 1.3 * np.abs(np.diff(idle, axis=0)).mean()


def test_video_avatar_loops_its_frames_at_its_own_rate():
    base = default_avatar().frames[0]
    frames = np.stack([np.clip(base.astype(int) + d, 0, 255).astype(np.uint8) for d in (-40, 0, 40)])
    avatar = Avatar("clip", frames, fps=12.5)  # each source frame lasts two output frames
    g = LiteGenerator(LiteSettings(width=128, height=128, sway_degrees=0, sway_pixels=0, nod_pixels=0))
    st = g.open_session("v", avatar)
    out = run_clip(g, st, np.zeros(16 * 640, np.float32), speech=False)
    corner = out[:, :10, :10].astype(float).mean(axis=(1, 2, 3))  # background: untouched by the rigs
    expected = [(i // 2) % 3 for i in range(len(out))]
    levels = np.array([corner[[i for i, e in enumerate(expected) if e == k]].mean() for k in range(3)])
    assert levels[0] < levels[1] < levels[2]
    for i, e in enumerate(expected):
        assert abs(corner[i] - levels[e]) < 1.0


def test_two_speakers_each_drive_their_own_face(speech_dir):
    speech = read_wav_16k(speech_dir / "speech_en1.wav")[: 16_000 * 2]
    face = default_avatar().frames[0]
    canvas = np.concatenate([face, face], axis=1)  # 1024 x 512, same portrait twice
    boxes = ((160, 50, 290, 180), (672, 50, 802, 180))
    g = LiteGenerator(LiteSettings(width=512, height=256))
    st = g.open_session("duo", Avatar("duo", canvas[None], speaker_boxes=boxes), speakers=2)
    assert len(st.faces) == 2
    spec = g.window
    frames = []
    for w in range(len(speech) // spec.window_samples):
        a = np.zeros((2, spec.job_samples), np.float32)
        chunk = speech[w * spec.window_samples: w * spec.window_samples + spec.job_samples]
        a[0, : len(chunk)] = chunk  # only the left speaker talks
        frames += list(g.generate(st, WindowJob("duo", w, w * spec.new_frames, a, True)))
    frames = np.stack(frames)
    left = region_motion(frames, st.faces[0].geom.mouth_box()).mean()
    right = region_motion(frames, st.faces[1].geom.mouth_box()).mean()
    assert left > 3.0 * right, (left, right)
