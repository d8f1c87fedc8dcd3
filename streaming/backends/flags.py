"""Command-line flags of the registered backends, generated from their options dataclasses, and the
backend a parsed command line asks for (the CLI in server/ uses these; it never lists an option itself).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

from model.options import OptionField, add_arguments, from_namespace, given_flags, option_fields

from .registry import DEFAULT_BACKEND, Backend, backends, choose_backend


def add_backend_flags(parser: argparse.ArgumentParser, names: Iterable[str] | None = None) -> None:
    """One argument group per backend that has options (all registered backends, or `names`)."""
    table = backends()
    seen: dict[str, OptionField] = {}
    for name in names or table:
        backend = table[name]
        if any(option_fields(backend.options)):
            add_arguments(parser, backend.options, f"backend {name}", seen)


def backend_help() -> str:
    """`--backend`'s help: every backend, and which is used when none is named."""
    table = backends()
    listed = "; ".join(f"{b.name}: {b.description}" for b in table.values())
    picks = "; ".join(f"{b.name} when {' or '.join(b.selected_by)} is given" for b in table.values() if b.selected_by)
    return f"video backend ({listed}). Default: {picks}; else {DEFAULT_BACKEND}"


def backend_from_args(args: argparse.Namespace) -> tuple[Backend, Any]:
    """The backend `args` ask for (`args.backend`, else picked by a flag only it takes, else the default)
    and its options. ValueError, saying what to do, for a flag that belongs to another backend."""
    table = backends()
    given = {flag: b for b in table.values() for flag in given_flags(b.options, args)}
    backend = choose_backend(args.backend, given)
    own = {opt.flag for opt in option_fields(backend.options)}
    foreign = sorted(flag for flag in given if flag not in own)
    if foreign:
        owner = given[foreign[0]].name
        what = "is an option" if len(foreign) == 1 else "are options"
        raise ValueError(f"{', '.join(foreign)} {what} of backend {owner}, not of {backend.name}: leave "
                         f"{'it' if len(foreign) == 1 else 'them'} out, or choose --backend {owner}")
    return backend, from_namespace(backend.options, args)
