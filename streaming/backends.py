"""Product backends by name, for the CLI: `create_generator("lite")`.

Test doubles (pattern, zero-cost) live with the tests and benches, never here.
"""

from __future__ import annotations

from typing import Any

from .generator import Generator

BACKENDS = {
    "lite": "CPU portrait animator, not InfiniteTalk",
    "infinitetalk": "the InfiniteTalk model",
}
"""name -> a few words for humans (the CLI prints them next to the URL)."""


class BackendUnavailable(RuntimeError):
    """The backend exists by name but cannot be created here (not implemented yet, or missing pieces)."""


def create_generator(name: str, **options: Any) -> Generator:
    """Build the backend called `name`; `options` go to its settings (lite: LiteSettings fields, e.g.
    width=384; infinitetalk: InfiniteTalkOptions fields, e.g. weights=Path(...), preset="tiny-random").

    Raises MissingWeightsError (a FileNotFoundError) naming every missing model file."""
    if name == "lite":
        try:
            from .lite import LiteGenerator, LiteSettings
        except ImportError as exc:
            raise BackendUnavailable(f"the lite backend is not installed in this build ({exc})") from exc
        return LiteGenerator(LiteSettings(**options)) if options else LiteGenerator()
    if name == "infinitetalk":
        from .infinitetalk_setup import InfiniteTalkOptions, build_infinitetalk_generator

        return build_infinitetalk_generator(InfiniteTalkOptions(**options))
    raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
