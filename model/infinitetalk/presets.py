"""Named generation settings: window length, motion frames, sampler and guidance, as data."""

from __future__ import annotations

from model.sampling import LIGHTX2V_4STEP, GuidanceScales

from .settings import WindowSettings

PRESETS: dict[str, WindowSettings] = {
    # The reference's defaults at 480p: 81-frame windows (72 new frames), 40 steps, text 5 / audio 4.
    "infinitetalk": WindowSettings(frame_num=81, motion_frames=9, steps=40, shift=7.0, guidance=GuidanceScales(5.0, 4.0)),
    # Shorter windows for lower latency (24 new frames = 0.96 s per window).
    "infinitetalk-lowlatency": WindowSettings(frame_num=33, motion_frames=9, steps=40, shift=7.0,
                                              guidance=GuidanceScales(5.0, 4.0)),
    # With the lightx2v 4-step LoRA merged (--lora): no guidance, one DiT call per step.
    "infinitetalk-4step": WindowSettings.from_preset(LIGHTX2V_4STEP, frame_num=33, motion_frames=9),
    # The tiny random test model: small windows, 2 steps.
    "tiny-random": WindowSettings(frame_num=17, motion_frames=5, steps=2, shift=5.0, guidance=GuidanceScales(1.0, 2.0)),
}


def get_preset(name: str) -> WindowSettings:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}") from None
