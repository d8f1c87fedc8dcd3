"""Backends are packages under streaming/backends/, registered by name, and declare their optional
capabilities through the protocols of streaming/generator.py (issue 14, item 3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import streaming.backends
from streaming.backends import backends, create_generator, get_backend
from streaming.backends.lite import LiteGenerator, LiteSettings
from streaming.generator import (
    AdaptiveQualityGenerator,
    Avatar,
    BatchingGenerator,
    ClosingGenerator,
    ContinuingGenerator,
    Generator,
)

from ..helpers.tiny_infinitetalk import tiny_bundle, tiny_generator


def test_every_package_under_streaming_backends_is_a_registered_backend_of_the_same_name():
    folder = Path(streaming.backends.__file__).parent
    packages = {p.name for p in folder.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(backends()) == {"lite", "infinitetalk"}
    assert get_backend("lite").description == "CPU portrait animator, not InfiniteTalk"
    with pytest.raises(ValueError, match="unknown backend 'nope': choose one of infinitetalk, lite"):
        get_backend("nope")


def test_create_generator_takes_the_backends_options_dataclass_or_its_fields():
    gen = create_generator("lite", LiteSettings(width=96, height=64))
    assert isinstance(gen, LiteGenerator) and gen.output_size(Avatar("a", np.zeros((1, 8, 8, 3), np.uint8))) == (96, 64)
    assert create_generator("lite", width=48, height=48).settings == LiteSettings(width=48, height=48)


CAPABILITIES = (BatchingGenerator, ContinuingGenerator, AdaptiveQualityGenerator, ClosingGenerator)


def test_each_backend_declares_its_optional_capabilities_through_the_protocols(tmp_path):
    lite = LiteGenerator()
    assert isinstance(lite, Generator) and not any(isinstance(lite, c) for c in CAPABILITIES)
    torch.set_num_threads(1)
    model = tiny_generator(tiny_bundle(tmp_path))
    assert isinstance(model, Generator) and all(isinstance(model, c) for c in CAPABILITIES)
    assert model.max_batch == 4 and model.continue_frames == model.settings.window.motion_frames
