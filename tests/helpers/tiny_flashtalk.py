"""A tiny random SoulX-FlashTalk folder, loaded through detection, discovery and the CLI's setup path."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from model.families import ModelOptions
from model.infinitetalk.tiny import write_tiny_flashtalk_weights
from streaming.backends import create_generator
from streaming.backends.infinitetalk import InfiniteTalkOptions
from streaming.backends.infinitetalk.generator import InfiniteTalkGenerator

from .tiny_infinitetalk import FAST_FEATURES

MODEL_FIELDS = {f.name for f in dataclasses.fields(ModelOptions)}


def tiny_flashtalk_root(root: Path) -> Path:
    return write_tiny_flashtalk_weights(root)


def flashtalk_generator(root: Path, **options) -> InfiniteTalkGenerator:
    """The backend as `serve --weights ROOT` builds it (no --preset: picked from the folder), at 32x32.
    options: fields of ModelOptions or of InfiniteTalkOptions."""
    kw = dict(weights=root, size=(32, 32), features=FAST_FEATURES, seed=1)
    kw.update(options)
    model = ModelOptions(**{k: v for k, v in kw.items() if k in MODEL_FIELDS})
    live = {k: v for k, v in kw.items() if k not in MODEL_FIELDS}
    return create_generator("infinitetalk", InfiniteTalkOptions(model, **live))
