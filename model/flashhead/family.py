"""The FlashHead family in the model registry: SoulX-FlashHead-1.3B Pro and Lite, presets flashhead-pro
and flashhead-lite, detected from the release layout (`release.py`)."""

from model.families.registry import ModelFamily

from .assemble import build, detect, run_follower
from .release import KINDS

FAMILY = ModelFamily(name="flashhead", kinds=KINDS, presets=KINDS, detect=detect, build=build, follow=run_follower)
