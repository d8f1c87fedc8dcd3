"""SoulX-FlashTalk weights behind the engine: preset picked from the folder, window latency, a live session."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from model.infinitetalk.presets import get_preset
from streaming.generator import Avatar
from streaming.planner import WindowPlanner

from ..helpers.engine_runs import offline_frames, read_wav
from ..helpers.tiny_flashtalk import flashtalk_generator, tiny_flashtalk_root
from ..helpers.tiny_infinitetalk import FAST_FEATURES

AVATAR = Avatar("face", np.random.default_rng(0).integers(0, 256, (1, 120, 80, 3), np.uint8))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    torch.set_num_threads(1)
    return tiny_flashtalk_root(tmp_path_factory.mktemp("tiny-flashtalk"))


def test_a_flashtalk_folder_gets_the_flashtalk_preset_size_and_window_latency(root, caplog):
    with caplog.at_level(logging.INFO, logger="model.infinitetalk.assemble"):
        gen = flashtalk_generator(root, size=None)
    assert "weights are flashtalk: using preset flashtalk" in caplog.text
    assert gen.settings.window == get_preset("flashtalk")
    assert gen.output_size(AVATAR) == (448, 768)  # (width, height): 768x448 portrait whatever the avatar
    assert "SoulX-FlashTalk" in gen.description and "preset flashtalk" in gen.description
    spec = gen.window
    assert spec.new_frames == 28 and spec.window_seconds == pytest.approx(1.12)
    # FlashTalk streams with rolling features: a window waits for its own 28 frames of audio and no more.
    assert gen.rolling and "rolling 8 s speech features" in gen.description
    assert spec.lookahead_frames == 0
    assert WindowPlanner(spec).samples_needed / 16000 == pytest.approx(28 / 25)
    # The incremental extractor instead waits for its look-ahead plus the +-2-frame audio window.
    spec = flashtalk_generator(root, size=None, audio_features="incremental").window
    assert spec.lookahead_frames == FAST_FEATURES.max_delay_frames + 2
    assert WindowPlanner(spec).samples_needed / 16000 == pytest.approx(28 / 25 + spec.lookahead_frames / 25)


def test_an_explicit_preset_wins_over_the_folder_kind_with_a_warning(root, caplog):
    with caplog.at_level(logging.WARNING, logger="model.infinitetalk.assemble"):
        gen = flashtalk_generator(root, preset="infinitetalk", steps=1)
    assert "meant for preset flashtalk" in caplog.text
    assert gen.window.new_frames == 72 and gen.settings.window.update == "euler"


@pytest.mark.parametrize("features", ["rolling", "incremental"])
async def test_a_flashtalk_session_end_to_end_is_sample_exact_and_deterministic_for_a_seed(root, speech_dir, features):
    speech = read_wav(speech_dir / "speech_en1.wav")[: 16000 * 3 // 2]
    first = await offline_frames(flashtalk_generator(root, seed=7, audio_features=features), speech, AVATAR)
    assert len(first) == math.ceil(math.ceil(speech.size / 640) / 28) * 28
    assert first[0].image.shape == (32, 32, 3)
    np.testing.assert_array_equal(np.concatenate([f.audio for f in first])[: speech.size], speech)
    again = await offline_frames(flashtalk_generator(root, seed=7, audio_features=features), speech, AVATAR)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
    # Random weights make noise, but it moves from frame to frame.
    diffs = [np.abs(a.image.astype(int) - b.image.astype(int)).mean() for a, b in zip(first[:-1], first[1:], strict=True)]
    assert np.mean(diffs) > 0.5
