"""A tiny random InfiniteTalk written to disk and loaded through the real discovery and loaders."""

from __future__ import annotations

from pathlib import Path

import torch

from model.infinitetalk import InfiniteTalkBundle, ModelFiles, WindowSettings, load_bundle
from model.infinitetalk.tiny import write_tiny_weights
from model.sampling import GuidanceScales
from streaming.backends.infinitetalk.generator import InfiniteTalkBackendSettings, InfiniteTalkGenerator
from streaming.features import FeatureSettings

FAST_WINDOW = WindowSettings(frame_num=17, motion_frames=5, steps=2, shift=5.0, guidance=GuidanceScales(1.0, 2.0))
FAST_FEATURES = FeatureSettings(left_context_frames=25, lookahead_frames=4, block_frames=4)


def tiny_bundle(root: Path) -> InfiniteTalkBundle:
    write_tiny_weights(root)
    return load_bundle(ModelFiles.discover(root), dtype=torch.float32)


def tiny_generator(bundle: InfiniteTalkBundle, **overrides) -> InfiniteTalkGenerator:
    kw = dict(window=FAST_WINDOW, size=(32, 32), features=FAST_FEATURES, seed=1)
    kw.update(overrides)
    return InfiniteTalkGenerator(bundle, InfiniteTalkBackendSettings(**kw))
