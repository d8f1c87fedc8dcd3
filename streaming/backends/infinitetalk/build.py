"""The infinitetalk backend from its options: model/ builds the ready model (an InfiniteTalk-family one or,
for the flashhead presets, SoulX-FlashHead), this wraps it for live sessions."""

from __future__ import annotations

import dataclasses
from typing import Any

from model.families.registry import build_model, follow_model, is_follower_rank
from model.flashhead.assemble import FlashHeadModel
from model.infinitetalk.assemble import InfiniteTalkModel
from streaming.features import FeatureSettings

from ..registry import BackendUnavailable
from .flashhead import FlashHeadGenerator
from .generator import InfiniteTalkBackendSettings, InfiniteTalkGenerator
from .options import InfiniteTalkOptions


def backend_settings(opts: InfiniteTalkOptions, model: InfiniteTalkModel, **overrides: Any) -> InfiniteTalkBackendSettings:
    """The live settings for `model` under `opts` (overrides: other settings fields, e.g. max_batch)."""
    settings = InfiniteTalkBackendSettings(
        window=model.window, size=model.size, seed=opts.model.seed, features=opts.features or FeatureSettings(),
        audio_features=opts.audio_features_for(model.preset), idle=opts.idle,
    )
    return dataclasses.replace(settings, **overrides)


def create(opts: InfiniteTalkOptions) -> InfiniteTalkGenerator | FlashHeadGenerator:
    """Load the model (MissingWeightsError before anything heavy when files are missing) and wrap it."""
    model = build_model(opts.model)
    if isinstance(model, FlashHeadModel):
        return FlashHeadGenerator(model, seed=opts.model.seed, face_crop=opts.face_crop)
    if not isinstance(model, InfiniteTalkModel):
        raise BackendUnavailable(f"backend infinitetalk runs InfiniteTalk-family models, not {type(model).__name__}")
    return InfiniteTalkGenerator(model.bundle, backend_settings(opts, model))


def follow(opts: InfiniteTalkOptions) -> int | None:
    """On a follower rank of a sequence-parallel launch: serve rank 0's calls until it stops; else None."""
    return follow_model(opts.model) if is_follower_rank(opts.model) else None
