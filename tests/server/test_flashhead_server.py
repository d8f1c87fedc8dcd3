"""`render` and `serve` with `--preset flashhead-pro` and `--preset flashhead-lite` on tiny random SoulX-FlashHead
models written in the release layout (loaded through the real detection and loaders): frame count, audio sync,
a live websocket session."""

from __future__ import annotations

import asyncio
import math

import av
import numpy as np
import pytest
import torch

from model.flashhead.tiny import write_tiny_flashhead
from server.cli import main, make_generator, parser

from ..helpers.server_app import read_wav
from ..helpers.ws_session import speech_session


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    torch.set_num_threads(1)
    return write_tiny_flashhead(tmp_path_factory.mktemp("tiny-flashhead") / "SoulX-FlashHead-1_3B")


@pytest.fixture(scope="module")
def lite_root(tmp_path_factory):
    return write_tiny_flashhead(tmp_path_factory.mktemp("tiny-flashhead-lite") / "SoulX-FlashHead-1_3B",
                                kind="flashhead-lite")


@pytest.mark.parametrize("preset", ["flashhead-pro", "flashhead-lite"])
def test_render_with_a_flashhead_preset_keeps_every_frame_and_the_speech(preset, root, lite_root, tmp_path,
                                                                          speech_dir):
    from streaming.avatars import builtin_avatar_path

    out, wav = tmp_path / "talk.mp4", speech_dir / "speech_de1.wav"
    weights = lite_root if preset == "flashhead-lite" else root
    code = main(["render", "--image", str(builtin_avatar_path("astronaut")), "--audio", str(wav), "-o", str(out),
                 "--preset", preset, "--weights", str(weights), "--size", "32x32", "--no-progress",
                 "--seed", "3"])
    assert code == 0
    samples = read_wav(wav).size
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        assert v.average_rate == 25 and (v.codec_context.width, v.codec_context.height) == (32, 32)
        n = sum(1 for _ in c.decode(video=0))
    assert n == math.ceil(samples / 640)  # one frame per 640 samples: video and speech stay in step
    with av.open(str(out)) as c:
        audio_s = sum(f.samples for f in c.decode(audio=0)) / c.streams.audio[0].rate
    assert abs(audio_s - samples / 16000) < 0.1


async def test_flashhead_pro_serves_a_live_websocket_session(root, speech_dir):
    args = parser().parse_args(["serve", "--preset", "flashhead-pro", "--weights", str(root), "--size", "32x32",
                                "--seed", "2"])
    gen = await asyncio.to_thread(make_generator, args)
    assert gen is not None and gen.window.new_frames == 28 and gen.window.lookahead_frames == 0
    speech = read_wav(speech_dir / "speech_de1.wav")[: 16000 * 2]
    info, ready, log = await speech_session(gen, speech)
    desc = info["backend_description"]
    assert "SoulX-FlashHead-1.3B Pro" in desc and "preset flashhead-pro" in desc and "33 frames (5 motion)" in desc
    assert ready["window_frames"] == 28 and (ready["width"], ready["height"]) == (32, 32)
    frames = log.frames
    assert [f.index for f in frames] == list(range(len(frames)))
    assert any(f.speech for f in frames) and not log.json("error")
    out = np.concatenate([f.pcm for f in frames])
    np.testing.assert_array_equal(out[np.flatnonzero(out)], speech[np.flatnonzero(speech)])


async def test_flashhead_lite_serves_a_live_websocket_session(lite_root, speech_dir):
    args = parser().parse_args(["serve", "--preset", "flashhead-lite", "--weights", str(lite_root), "--size", "32x32",
                                "--seed", "2"])
    gen = await asyncio.to_thread(make_generator, args)
    assert gen is not None and gen.window.new_frames == 24 and gen.window.lookahead_frames == 0
    speech = read_wav(speech_dir / "speech_de1.wav")[: 16000 * 2]
    info, ready, log = await speech_session(gen, speech)
    desc = info["backend_description"]
    assert "SoulX-FlashHead-1.3B Lite (LTX-Video VAE)" in desc and "preset flashhead-lite" in desc
    assert "33 frames (9 motion)" in desc
    assert ready["window_frames"] == 24 and (ready["width"], ready["height"]) == (32, 32)
    frames = log.frames
    assert [f.index for f in frames] == list(range(len(frames)))
    assert len(frames) >= len(speech) // 640  # every frame of the speech came back, in order
    assert any(f.speech for f in frames) and not log.json("error")
    out = np.concatenate([f.pcm for f in frames])
    np.testing.assert_array_equal(out[np.flatnonzero(out)], speech[np.flatnonzero(speech)])
