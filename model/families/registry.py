"""Model families by name: from `ModelOptions` to a ready model of whichever family the weights are.

A family is a package under model/ with a `family.py` whose `FAMILY` is a `ModelFamily`: the weights
kinds it loads, the presets it owns, how it recognises its weights, how it builds a ready model and
what the follower ranks of a multi-process launch run. Adding a family is adding that package; the
registry finds it (no list to edit). Which family a run gets:

1. `--preset NAME`: the family owning the preset;
2. `--weights-config FILE`: the family of the file's "kind";
3. `--weights DIR`: the first family whose `detect` recognises the folder;
4. otherwise `DEFAULT_FAMILY`, whose builder says what is missing.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .options import ModelOptions

DEFAULT_FAMILY = "infinitetalk"
"""Asked when no family recognises the weights (or none are given): its loader lists what is missing."""

MODEL_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ModelFamily:
    """name: e.g. "infinitetalk". kinds: weights kinds it loads (e.g. "infinitetalk", "flashtalk").
    presets: preset names it owns. detect: a weights folder -> its kind, or None when not this family's.
    build: options -> the family's ready model. follow: options -> calls served, on ranks > 0."""

    name: str
    kinds: tuple[str, ...]
    presets: tuple[str, ...]
    detect: Callable[[Path], str | None]
    build: Callable[[ModelOptions], Any]
    follow: Callable[[ModelOptions], int]


@functools.cache
def families() -> dict[str, ModelFamily]:
    """Every family under model/ (packages holding a family.py), by name."""
    found: dict[str, ModelFamily] = {}
    for path in sorted(MODEL_ROOT.glob("*/family.py")):
        family = importlib.import_module(f"model.{path.parent.name}.family").FAMILY
        for other in found.values():
            shared = set(family.presets) & set(other.presets) or set(family.kinds) & set(other.kinds)
            if shared:
                raise RuntimeError(f"model families {other.name} and {family.name} both claim {sorted(shared)}")
        found[family.name] = family
    return found


def _config_kind(path: Path) -> str | None:
    try:
        kind = json.loads(path.read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None  # the family's loader reports an unreadable file
    return kind if isinstance(kind, str) else None


def family_for(opts: ModelOptions) -> ModelFamily:
    """The family these options ask for (rules in the module docstring)."""
    table = families()
    if opts.preset is not None:
        for family in table.values():
            if opts.preset in family.presets:
                return family
        every = [p for f in table.values() for p in f.presets]
        raise ValueError(f"unknown preset {opts.preset!r}: choose one of {', '.join(every)}")
    kind = None
    if opts.weights_config is not None:
        kind = _config_kind(opts.weights_config)
    elif opts.weights is not None:
        kind = next((k for f in table.values() if (k := f.detect(opts.weights)) is not None), None)
    return next((f for f in table.values() if kind in f.kinds), table[DEFAULT_FAMILY])


def build_model(opts: ModelOptions) -> Any:
    """The ready model (networks loaded, preset resolved) of the family the options ask for."""
    return family_for(opts).build(opts)


def is_follower_rank(opts: ModelOptions) -> bool:
    """True on ranks > 0 of a multi-process launch (torchrun with --sequence-parallel): they run
    `follow_model` instead of an application."""
    return opts.sequence_parallel and int(os.environ.get("RANK", "0")) > 0


def follow_model(opts: ModelOptions) -> int:
    """Ranks > 0: load this rank's part of the model and run rank 0's calls until it stops."""
    return family_for(opts).follow(opts)
