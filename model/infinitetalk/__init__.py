"""InfiniteTalk generation: per-window operations and the reference's long-video loop."""

from .bundle import InfiniteTalkBundle, MissingWeightsError, ModelFiles, load_bundle
from .dit_loader import load_infinitetalk_dit
from .long_video import (
    WindowRecord,
    audio_rows,
    draw_window_noise,
    generate_long_video,
    mirror_pad,
    u8_to_unit,
)
from .pipeline import InfiniteTalkPipeline, StepTrace, TextConditioning, WindowCondition
from .settings import WindowSettings
from .speed import SpeedOptions
from .timing import StageTimes

__all__ = [
    "InfiniteTalkBundle", "MissingWeightsError", "ModelFiles", "StageTimes", "load_bundle", "load_infinitetalk_dit",
    "InfiniteTalkPipeline", "StepTrace", "TextConditioning", "WindowCondition", "WindowRecord",
    "SpeedOptions", "WindowSettings", "audio_rows", "draw_window_noise", "generate_long_video", "mirror_pad", "u8_to_unit",
]
