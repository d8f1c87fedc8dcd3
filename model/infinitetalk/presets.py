"""Named generation settings: window length, motion frames, sampler and guidance, as data."""

from __future__ import annotations

from model.sampling import FLASHTALK_4STEP, LIGHTX2V_4STEP, GuidanceScales

from .settings import WindowSettings

PRESETS: dict[str, WindowSettings] = {
    # The reference's defaults at 480p: 81-frame windows (72 new frames), 40 steps, text 5 / audio 4.
    "infinitetalk": WindowSettings(frame_num=81, motion_frames=9, steps=40, shift=7.0, guidance=GuidanceScales(5.0, 4.0)),
    # Shorter windows for lower latency (24 new frames = 0.96 s per window).
    "infinitetalk-lowlatency": WindowSettings(frame_num=33, motion_frames=9, steps=40, shift=7.0,
                                              guidance=GuidanceScales(5.0, 4.0)),
    # With the lightx2v 4-step LoRA merged (--lora): no guidance, one DiT call per step.
    "infinitetalk-4step": WindowSettings.from_preset(LIGHTX2V_4STEP, frame_num=33, motion_frames=9),
    # SoulX-FlashTalk-14B (its flash_talk/configs/infer_params.yaml): 33-frame windows, 5 motion frames
    # (2 latent frames) -> 28 new frames (1.12 s) per window, 4 steps [1000, 750, 500, 250] at shift 5,
    # x0 re-noised each step, no guidance, colour correction 1.0. `--steps 2` gives its [1000, 500].
    "flashtalk": WindowSettings.from_preset(FLASHTALK_4STEP, frame_num=33, motion_frames=5, colour_strength=1.0),
    # The tiny random test model: small windows, 2 steps.
    "tiny-random": WindowSettings(frame_num=17, motion_frames=5, steps=2, shift=5.0, guidance=GuidanceScales(1.0, 2.0)),
}

PRESET_SIZES: dict[str, tuple[int, int]] = {
    # (height, width): FlashTalk generates 768x448 portrait video (infer_params.yaml height/width).
    "flashtalk": (768, 448),
}
"""Generation size a preset implies when none is given; presets not listed follow the avatar's 480p bucket."""

KIND_PRESETS: dict[str, str] = {"infinitetalk": "infinitetalk", "flashtalk": "flashtalk"}
"""Default preset for each kind of weights folder (see `detect_weights_kind`)."""


def get_preset(name: str) -> WindowSettings:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}") from None


def preset_size(name: str) -> tuple[int, int] | None:
    """(height, width) the preset generates at, or None to pick from the avatar's shape."""
    return PRESET_SIZES.get(name)
