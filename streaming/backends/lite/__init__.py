"""The `lite` backend: a CPU portrait animator (not InfiniteTalk) so the server runs anywhere."""

from ..registry import Backend, register
from .generator import LiteGenerator, LiteSession
from .settings import LiteSettings

__all__ = ["LiteGenerator", "LiteSession", "LiteSettings"]

BACKEND = register(Backend("lite", "CPU portrait animator, not InfiniteTalk", LiteSettings, LiteGenerator))
