"""Negative prompts the reference pipeline falls back on when the user gives none.

Data, kept verbatim so that a precomputed negative embedding matches the reference's.
"""

from __future__ import annotations

DEFAULT_NEGATIVE_PROMPT = (
    'bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, '
    'images, static, overall gray, worst quality, low quality, JPEG compression residue, ugly, '
    'incomplete, extra fingers, poorly drawn hands, poorly drawn faces, deformed, disfigured, '
    'misshapen limbs, fused fingers, still picture, messy background, three legs, '
    'many people in the background, walking backwards'
)
"""What InfiniteTalk's pipeline uses for an empty negative prompt: its `infinitetalk-14B` task config
(`wan/configs/wan_multitalk_14B.py`) overrides the Wan default with this English text."""

WAN_DEFAULT_NEGATIVE_PROMPT_ZH = (
    '色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，'
    '整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，'
    '画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，'
    '静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走'
)
"""The Wan2.1 shared default (Chinese), used by the Wan T2V/I2V configs that InfiniteTalk inherits from."""


def resolve_negative_prompt(negative: str | None) -> str:
    """The reference's rule: an empty (or missing) negative prompt means the default one."""
    return negative if negative else DEFAULT_NEGATIVE_PROMPT
