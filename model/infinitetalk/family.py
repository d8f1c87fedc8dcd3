"""The InfiniteTalk family in the model registry: the InfiniteTalk release and SoulX-FlashTalk-14B
(the same DiT with its audio adapter), with the presets of `presets.py`."""

from model.families.registry import ModelFamily

from .assemble import build, detect, run_follower
from .kinds import KINDS
from .presets import PRESETS

FAMILY = ModelFamily(name="infinitetalk", kinds=KINDS, presets=tuple(PRESETS), detect=detect, build=build,
                     follow=run_follower)
