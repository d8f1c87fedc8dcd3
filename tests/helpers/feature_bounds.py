"""Bounds on the live wav2vec2 features, derived from a sweep over random tiny models (not one file).

tests/bounds/feature_bounds_sweep.py measures every statistic below over a family of random models
(tests/helpers/w2v_family.py); docs/live_features.md ("Bounds from a sweep") has the table. Rule:
a bound is the sweep's worst case with its distance from perfect (1 - cosine, an error, a drop)
grown by 25 % (a gain or a cost: shrunk by 25 %), rounded outward; an old bound that was already
looser is kept. A model's family is its initialisation and how far its positional conv reads past
the default look-ahead: that decides how close a live stream can get.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import Wav2Vec2Model

from streaming.features import FeatureSettings

from .w2v_family import pos_reach


@dataclass(frozen=True)
class FamilyBounds:
    """What the encoder-side tests assert, per family (None: the family supports no bound there).

    mean_min, p5_min: per-frame cosine, live (default settings) vs whole clip, pooled over the first
        6 s of speech_en1, speech_en2, speech_de1.
    cached_behind_max: how much closer (mean cosine) the recomputing encoder may be than the cached one.
    lookahead_*: look-ahead 0 -> 4 -> 8 -> 16 (others default): the largest drop of a clip's mean and of
        the pooled 5th percentile from one step to the next (the statistics' warm-up length follows the
        look-ahead, so small drops happen in any family), and the least gain of 16 over 0.
    """

    mean_min: float
    p5_min: float | None
    cached_behind_max: float
    lookahead_clip_mean_drop_max: float
    lookahead_p5_drop_max: float
    lookahead_gain_min: float | None


FAMILIES: dict[str, FamilyBounds] = {
    "golden-near": FamilyBounds(0.94, 0.73, 0.006, 0.015, 0.012, 0.004),
    "golden-mid": FamilyBounds(0.88, 0.61, 0.012, 0.007, 0.01, 0.005),
    # far: the live features are no usable approximation for every model here (one: 0.53 mean, and
    # worse with more look-ahead); these are only what holds
    "golden-far": FamilyBounds(0.41, None, 0.18, 0.27, 0.39, None),
    "hf-near": FamilyBounds(0.98, 0.87, 0.003, 0.005, 0.012, 0.005),
    "hf-mid": FamilyBounds(0.97, 0.92, 0.003, 0.002, 0.01, 0.005),
    "hf-far": FamilyBounds(0.96, 0.87, 0.003, 0.002, 0.01, 0.003),
}

# Broken paths (tests/helpers/feature_measures.broken_paths), near and mid families. One frame late
# falls below the family's closeness bound. Silence for the look-ahead and (golden init) no left context
# cost too little on some models for the family-wide bound to catch them, so they are held against the
# same model's default path: the cost is max(drop of the mean, drop of the 5th percentile).
SILENT_LOOKAHEAD_COST_MIN = 0.004
ONE_FRAME_LATE_COST_MIN = 0.11  # any family, far included (worst 0.146), where nothing else is caught
NO_LEFT_CONTEXT_COST_MIN = 0.011  # golden init only: transformers' init leaves attention nearly uniform

# The conv stack (independent of the encoder): global over the sweep.
CONV_LAST_SECOND_MIN = 0.999  # conv features, running vs whole-clip statistics, last second of speech_en1
LEADING_SILENCE_MAX = 0.01  # relative error of speech after 3 s of leading silence (sound gate on)
BF16_COSINE_MIN = 0.99  # live features, bf16 model vs float32
LOUDNESS_EFFECT_MAX = 1e-4  # live features with vs without the loudness gain, relative to their max


def reach_class(model: Wav2Vec2Model, lookahead: int | None = None) -> str:
    """"near": the positional conv reads no further right than the look-ahead; "mid": up to twice as far;
    "far": further (chinese-wav2vec2-base: 128 taps read 63 tokens = 2.5 s ahead)."""
    la = FeatureSettings().lookahead_frames if lookahead is None else lookahead
    reach = pos_reach(model)
    return "near" if reach <= la else "mid" if reach <= 2 * la else "far"


def family_of(model: Wav2Vec2Model, init: str) -> str:
    """init ("golden": the golden generator's weights; "hf": transformers' own) and reach class."""
    return f"{init}-{reach_class(model)}"


def closeness_ok(bounds: FamilyBounds, mean: float, p5: float) -> bool:
    return mean >= bounds.mean_min and (bounds.p5_min is None or p5 >= bounds.p5_min)


def cost(default: tuple[float, float], broken: tuple[float, float]) -> float:
    """How much worse a path is than the default: the larger drop of (mean, 5th percentile)."""
    return max(default[0] - broken[0], default[1] - broken[1])
