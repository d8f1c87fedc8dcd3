"""Video backends, one package each, registered by name (see `registry`):

    lite/          CPU portrait animator (not InfiniteTalk): runs anywhere, the default
    infinitetalk/  the InfiniteTalk family (InfiniteTalk, SoulX-FlashTalk) on live speech

`create_generator("lite")` builds one; the CLI lists `backends()` and makes flags of their options.
"""

from .registry import (
    DEFAULT_BACKEND,
    Backend,
    BackendUnavailable,
    backends,
    choose_backend,
    create_generator,
    get_backend,
    register,
    unregister,
)

__all__ = ["DEFAULT_BACKEND", "Backend", "BackendUnavailable", "backends", "choose_backend", "create_generator",
           "get_backend", "register", "unregister"]
