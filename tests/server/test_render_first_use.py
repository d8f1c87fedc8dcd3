"""`render` as a newcomer first runs it: no weights, no --backend, a built-in avatar by name (issue 14, item 8)."""

from __future__ import annotations

import math
import subprocess
import sys
import wave
from pathlib import Path

import av
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def short_speech(src: Path, dst: Path, seconds: float) -> int:
    """The first `seconds` of a 16 kHz WAV; returns its sample count."""
    with wave.open(str(src)) as r, wave.open(str(dst), "wb") as w:
        w.setparams(r.getparams())
        w.writeframes(r.readframes(int(seconds * r.getframerate())))
    with wave.open(str(dst)) as w:
        return w.getnframes()


def test_render_a_builtin_avatar_without_weights_uses_lite_says_so_and_writes_every_frame(tmp_path, speech_dir):
    speech, out = tmp_path / "speech.wav", tmp_path / "out.mp4"
    samples = short_speech(speech_dir / "speech_en1.wav", speech, 2.3)
    done = run_cli("render", "--avatar", "astronaut", "--audio", str(speech), "-o", str(out), "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "backend lite" in done.stdout and "--weights DIR renders with InfiniteTalk" in done.stdout
    with av.open(str(out)) as c:
        video, audio = c.streams.video[0], c.streams.audio[0]
        assert video.average_rate == 25 and audio.codec_context.name == "aac"
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == math.ceil(samples / 640)  # one 40 ms frame per 640 samples of speech
    assert np.abs(frames[0].astype(int) - frames[len(frames) // 2].astype(int)).mean() > 0.1  # the face moves
    with av.open(str(out)) as c:
        audio_s = sum(f.samples for f in c.decode(audio=0)) / c.streams.audio[0].rate
    assert abs(audio_s - samples / 16000) < 0.1


def test_render_finds_an_avatar_by_name_in_avatar_dir_and_an_unknown_name_lists_the_choices(tmp_path, speech_dir):
    speech = tmp_path / "speech.wav"
    short_speech(speech_dir / "speech_en1.wav", speech, 0.5)
    faces = tmp_path / "faces"
    faces.mkdir()
    Image.fromarray(np.full((96, 80, 3), 180, np.uint8)).save(faces / "grey.png")
    out = tmp_path / "grey.mp4"
    done = run_cli("render", "--avatar", "grey", "--avatar-dir", str(faces), "--audio", str(speech), "-o", str(out),
                   "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 13  # 0.5 s at 25 fps, rounded up
    done = run_cli("render", "--avatar", "nobody", "--avatar-dir", str(faces), "--audio", str(speech), "-o",
                   str(tmp_path / "x.mp4"))
    assert done.returncode == 2 and "no avatar called 'nobody'" in done.stderr and "astronaut" in done.stderr


def test_render_with_the_model_but_no_weights_says_what_to_give(tmp_path, speech_dir):
    speech = tmp_path / "speech.wav"
    short_speech(speech_dir / "speech_en1.wav", speech, 0.5)
    done = run_cli("render", "--avatar", "astronaut", "--audio", str(speech), "-o", str(tmp_path / "x.mp4"),
                   "--backend", "infinitetalk")
    assert done.returncode == 2
    assert "--weights DIR" in done.stderr and "--backend lite" in done.stderr
    done = run_cli("render", "--avatar", "astronaut", "--audio", str(speech), "-o", str(tmp_path / "x.mp4"),
                   "--steps", "2")
    assert done.returncode == 2 and "choose --backend infinitetalk" in done.stderr
