"""`serve --weights <SoulX-FlashTalk folder>` without --preset: detected, described, and live over the websocket."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from server.cli import make_generator, parser

from ..helpers.server_app import read_wav
from ..helpers.tiny_flashtalk import tiny_flashtalk_root
from ..helpers.ws_session import speech_session


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    torch.set_num_threads(1)
    return tiny_flashtalk_root(tmp_path_factory.mktemp("tiny-flashtalk"))


async def test_flashtalk_weights_serve_a_live_websocket_session(root, speech_dir):
    args = parser().parse_args(["serve", "--backend", "infinitetalk", "--weights", str(root), "--size", "32x32",
                                "--seed", "2"])
    assert args.preset is None
    gen = await asyncio.to_thread(make_generator, args)
    assert gen is not None and gen.window.new_frames == 28
    speech = read_wav(speech_dir / "speech_de1.wav")[: 16000 * 2]
    info, ready, log = await speech_session(gen, speech)
    desc = info["backend_description"]
    assert "SoulX-FlashTalk" in desc and "preset flashtalk" in desc and "33 frames (5 motion), 4 steps" in desc
    assert ready["backend"] == "infinitetalk" and ready["window_frames"] == 28
    assert (ready["width"], ready["height"]) == (32, 32)
    frames = log.frames
    assert [f.index for f in frames] == list(range(len(frames)))
    assert any(f.speech for f in frames) and not log.json("error")
    out = np.concatenate([f.pcm for f in frames])
    np.testing.assert_array_equal(out[np.flatnonzero(out)], speech[np.flatnonzero(speech)])
