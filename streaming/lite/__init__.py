"""The `lite` backend: a CPU portrait animator (not InfiniteTalk) so the server runs anywhere."""

from streaming.lite.generator import LiteGenerator, LiteSession
from streaming.lite.settings import LiteSettings

__all__ = ["LiteGenerator", "LiteSession", "LiteSettings"]
