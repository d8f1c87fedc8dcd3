"""Video backends by name. Each is a package under streaming/backends/ whose `__init__` registers a
`Backend`: its name, a few words for humans, its options dataclass (fields made with
`model.options.option` become command-line flags) and a factory. Adding a backend is adding a folder:
`backends()` imports every package it finds here.

Test doubles (pattern, zero-cost) live with the tests and benches, never here.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..generator import Generator

log = logging.getLogger(__name__)

DEFAULT_BACKEND = "lite"
"""The backend when none is named and no option of another one is given: it needs no weights."""


class BackendUnavailable(RuntimeError):
    """The backend exists by name but cannot be created here (its package failed to import)."""


@dataclass(frozen=True)
class Backend:
    """name: e.g. "lite". description: a few words (printed next to the server's URL).
    options: frozen dataclass of its settings; `create(options)` makes the generator (importing what is
    heavy only then). follow: multi-process launches: on a follower rank, serve rank 0's model calls
    until it stops and return how many; None on any other process (which runs the application).
    selected_by: flags only this backend takes; giving one picks it when `--backend` is left out."""

    name: str
    description: str
    options: type
    create: Callable[[Any], Generator]
    follow: Callable[[Any], int | None] | None = None
    selected_by: tuple[str, ...] = ()


_REGISTRY: dict[str, Backend] = {}
_BROKEN: dict[str, str] = {}  # package name -> why it failed to import
_discovered = False


def register(backend: Backend) -> Backend:
    """Make `backend` known by its name (a backend package calls this from its `__init__`)."""
    if backend.name in _REGISTRY and _REGISTRY[backend.name] != backend:
        raise ValueError(f"two backends are called {backend.name!r}")
    _REGISTRY[backend.name] = backend
    return backend


def unregister(name: str) -> None:
    """Forget a backend registered from outside streaming/backends/ (tests)."""
    _REGISTRY.pop(name, None)


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for pkg in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if not pkg.ispkg:
            continue
        try:
            importlib.import_module(f"{__package__}.{pkg.name}")
        except ImportError as exc:
            log.warning("backend package %s is not usable here: %s", pkg.name, exc)
            _BROKEN[pkg.name] = str(exc)


def backends() -> dict[str, Backend]:
    """Every registered backend, by name (sorted)."""
    _discover()
    return dict(sorted(_REGISTRY.items()))


def get_backend(name: str) -> Backend:
    table = backends()
    if name in table:
        return table[name]
    if name in _BROKEN:
        raise BackendUnavailable(f"backend {name} is not installed in this build ({_BROKEN[name]})")
    raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(table)}")


def create_generator(name: str, options: Any = None, **fields: Any) -> Generator:
    """Build the backend called `name` from its options dataclass (or from `fields` of it; neither:
    its defaults), e.g. `create_generator("lite", width=384)`.

    Raises MissingWeightsError (a FileNotFoundError) naming every missing model file."""
    backend = get_backend(name)
    if options is None:
        options = backend.options(**fields)
    return backend.create(options)


def choose_backend(named: str | None, given: Iterable[str]) -> Backend:
    """The backend for a command line: the one named, else the one selected by a given flag, else the
    default. `given`: the flags given (with values other than their defaults)."""
    table = backends()
    if named is not None:
        return get_backend(named)
    given = set(given)
    picked = [b for b in table.values() if given & set(b.selected_by)]
    if len(picked) > 1:
        raise ValueError(f"{', '.join(sorted(given))} could mean backend {' or '.join(b.name for b in picked)}: "
                         "choose one with --backend")
    return picked[0] if picked else table[DEFAULT_BACKEND]
