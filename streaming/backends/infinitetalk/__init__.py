"""The `infinitetalk` backend: the InfiniteTalk family (InfiniteTalk, SoulX-FlashTalk) on live speech.

    options.py    `InfiniteTalkOptions`: the model's options plus the live ones (light: the CLI reads it)
    build.py      options -> the generator (model/ builds the ready model); follower ranks
    generator.py  `InfiniteTalkGenerator`: live speech -> features -> windows of the model
"""

from streaming.generator import Generator

from ..registry import Backend, register
from .options import InfiniteTalkOptions

__all__ = ["InfiniteTalkOptions"]


def _create(opts: InfiniteTalkOptions) -> Generator:
    from .build import create  # torch and the model load only when the backend is built

    return create(opts)


def _follow(opts: InfiniteTalkOptions) -> int | None:
    from .build import follow

    return follow(opts)


BACKEND = register(Backend("infinitetalk", "the InfiniteTalk model", InfiniteTalkOptions, _create, follow=_follow,
                           selected_by=("--weights", "--weights-config", "--preset")))
