"""A tiny random SoulX-FlashTalk folder, loaded through detection, discovery and the CLI's setup path."""

from __future__ import annotations

from pathlib import Path

from model.infinitetalk.tiny import write_tiny_flashtalk_weights
from streaming.infinitetalk_backend import InfiniteTalkGenerator
from streaming.infinitetalk_setup import InfiniteTalkOptions, build_infinitetalk_generator

from .tiny_infinitetalk import FAST_FEATURES


def tiny_flashtalk_root(root: Path) -> Path:
    return write_tiny_flashtalk_weights(root)


def flashtalk_generator(root: Path, **options) -> InfiniteTalkGenerator:
    """The backend as `serve --weights ROOT` builds it (no --preset: picked from the folder), at 32x32."""
    kw = dict(weights=root, size=(32, 32), features=FAST_FEATURES, seed=1)
    kw.update(options)
    return build_infinitetalk_generator(InfiniteTalkOptions(**kw))
