"""Live (incremental) wav2vec2 speech features for InfiniteTalk: per-video-frame embeddings as audio arrives."""

from .conv_stack import SLOT, IncrementalConvStack
from .extractor import IncrementalFeatureExtractor, SilenceEmbeddings
from .loudness import RunningLoudness
from .norm_stats import NormStats, RunningMoments, whole_clip_norm_stats
from .settings import FeatureSettings

__all__ = [
    "SLOT", "FeatureSettings", "IncrementalConvStack", "IncrementalFeatureExtractor", "NormStats",
    "RunningLoudness", "RunningMoments", "SilenceEmbeddings", "whole_clip_norm_stats",
]
