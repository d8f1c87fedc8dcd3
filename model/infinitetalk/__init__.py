"""InfiniteTalk generation: per-window operations and the reference's long-video loop."""

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

__all__ = [
    "InfiniteTalkPipeline", "StepTrace", "TextConditioning", "WindowCondition", "WindowRecord",
    "WindowSettings", "audio_rows", "draw_window_noise", "generate_long_video", "mirror_pad", "u8_to_unit",
]
