"""wav2vec2 speech features for InfiniteTalk: loading, the whole-clip path in stages, frame windows."""

from .features import (
    SAMPLE_RATE,
    TARGET_LUFS,
    VIDEO_FPS,
    conv_features,
    encode_features,
    interpolate_features,
    loudness_normalize,
    normalize_input,
    num_video_frames,
    whole_clip_embedding,
)
from .loader import (
    Wav2Vec2LoadError,
    Wav2Vec2Preprocessing,
    check_wav2vec2_folder,
    load_wav2vec2,
    read_preprocessing,
)
from .windows import AUDIO_WINDOW, audio_windows, window_indices

__all__ = [
    "AUDIO_WINDOW", "SAMPLE_RATE", "TARGET_LUFS", "VIDEO_FPS", "Wav2Vec2LoadError", "Wav2Vec2Preprocessing",
    "audio_windows", "check_wav2vec2_folder", "conv_features", "encode_features", "interpolate_features",
    "load_wav2vec2", "loudness_normalize", "normalize_input", "num_video_frames", "read_preprocessing",
    "whole_clip_embedding", "window_indices",
]
