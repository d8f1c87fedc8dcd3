"""Options as data: a frozen dataclass whose fields carry their own help text is the one definition of
a set of options; `add_arguments` makes command-line flags of it and `from_namespace` turns parsed
flags back into the dataclass. Adding a field adds the flag, everywhere the dataclass is used.

    @dataclass(frozen=True)
    class Knobs:
        steps: int | None = option(None, "sampling steps (preset default)")
        fast: bool = option(False, "skip the slow part")
        loras: tuple[tuple[Path, float], ...] = option((), "LoRA file", flag="--lora", parse=parse_lora,
                                                       repeat=True, metavar="PATH[:STRENGTH]")
        inner: Other = group(Other)          # its flags join this dataclass's
        cache: dict | None = None            # not an option: no flag, always its default

The flag's value type comes from the annotation (int, float, str, Path, a Literal's choices, bool as a
switch; `X | None` as X); anything else names a `parse` function. stdlib only: the CLI's `--help`
must not import torch.
"""

import argparse
import dataclasses
import sys
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any, Literal

OPTION = "option"
"""Field metadata key of an `Option`."""
GROUP = "option_group"
"""Field metadata key of a nested options dataclass whose flags join the outer one's."""


@dataclass(frozen=True)
class Option:
    """How a field appears on the command line. flag: default `--field-name`. parse: text -> value
    (default: from the annotation). repeat: the flag may be given several times (values in a tuple)."""

    help: str
    flag: str | None = None
    metavar: str | None = None
    parse: Callable[[str], Any] | None = None
    repeat: bool = False


def option(default: Any, help: str, *, flag: str | None = None, metavar: str | None = None,
           parse: Callable[[str], Any] | None = None, repeat: bool = False) -> Any:
    """A dataclass field that is also a command-line option (see the module docstring)."""
    return dataclasses.field(default=default, metadata={OPTION: Option(help, flag, metavar, parse, repeat)})


def group(cls: type) -> Any:
    """A field holding another options dataclass (default: its defaults); its flags join this one's."""
    return dataclasses.field(default_factory=cls, metadata={GROUP: cls})


@dataclass(frozen=True)
class OptionField:
    """One flag: where it lives (`owner`, `field`) and how it parses."""

    owner: type
    field: dataclasses.Field
    option: Option

    @property
    def name(self) -> str:
        return self.field.name

    @property
    def flag(self) -> str:
        return self.option.flag or "--" + self.field.name.replace("_", "-")

    @property
    def default(self) -> Any:
        if self.field.default is MISSING:
            raise TypeError(f"option {self.owner.__name__}.{self.name} needs a default")
        return self.field.default


def option_fields(cls: type) -> Iterator[OptionField]:
    """Every option of `cls`, nested groups included, in field order."""
    for f in dataclasses.fields(cls):
        if GROUP in f.metadata:
            yield from option_fields(f.metadata[GROUP])
        elif OPTION in f.metadata:
            yield OptionField(cls, f, f.metadata[OPTION])


def _annotation(cls: type, f: dataclasses.Field) -> Any:
    """The field's type as an object, also under `from __future__ import annotations`."""
    if not isinstance(f.type, str):
        return f.type
    owner = next(c for c in cls.__mro__ if f.name in vars(c).get("__annotations__", {}))
    return eval(f.type, vars(sys.modules[owner.__module__]))  # the class's own annotation, in its module


def _argparse_kwargs(opt: OptionField) -> dict[str, Any]:
    """type/choices/action for the field's annotation (see the module docstring)."""
    kind = _annotation(opt.owner, opt.field)
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        kind = rest[0] if len(rest) == 1 else kind
    out: dict[str, Any] = {"help": opt.option.help, "dest": opt.name, "metavar": opt.option.metavar}
    if opt.option.repeat:
        if opt.option.parse is None:
            raise TypeError(f"option {opt.flag} repeats: give it a parse function for one value")
        return {**out, "action": "append", "type": opt.option.parse, "default": None}
    if kind is bool:
        if opt.default is not False:
            raise TypeError(f"switch {opt.flag} must default to False")
        return {"help": out["help"], "dest": opt.name, "action": "store_true", "default": False}
    if opt.option.parse is not None:
        return {**out, "type": opt.option.parse, "default": opt.default}
    if typing.get_origin(kind) is Literal:
        choices = typing.get_args(kind)
        return {**out, "type": type(choices[0]), "choices": choices, "default": opt.default}
    if kind in (int, float, str, Path):
        return {**out, "type": kind, "default": opt.default}
    raise TypeError(f"option {opt.flag}: no parser for {kind!r}; give option(..., parse=...)")


def add_arguments(parser: argparse.ArgumentParser, cls: type, title: str,
                  seen: dict[str, OptionField] | None = None) -> None:
    """Add `cls`'s options to `parser` as one argument group.

    seen: flags already added (shared by several calls): the same field again is skipped (two
    backends sharing an options dataclass), another field with the same flag is an error."""
    seen = {} if seen is None else seen
    g = parser.add_argument_group(title)
    for opt in option_fields(cls):
        if opt.flag in seen:
            if seen[opt.flag].field is not opt.field:
                other = seen[opt.flag]
                raise ValueError(f"flag {opt.flag} is defined twice: {other.owner.__name__}.{other.name} and "
                                 f"{opt.owner.__name__}.{opt.name}")
            continue
        seen[opt.flag] = opt
        g.add_argument(opt.flag, **_argparse_kwargs(opt))


def _value(opt: OptionField, ns: argparse.Namespace) -> Any:
    value = getattr(ns, opt.name)
    return tuple(value or ()) if opt.option.repeat else value


def from_namespace(cls: type, ns: argparse.Namespace) -> Any:
    """The dataclass `cls` filled from parsed flags (fields that are not options keep their defaults)."""
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if GROUP in f.metadata:
            kwargs[f.name] = from_namespace(f.metadata[GROUP], ns)
        elif OPTION in f.metadata and hasattr(ns, f.name):
            kwargs[f.name] = _value(OptionField(cls, f, f.metadata[OPTION]), ns)
    return cls(**kwargs)


def given_flags(cls: type, ns: argparse.Namespace) -> list[str]:
    """Flags of `cls` whose parsed value differs from the field's default (what the user asked for)."""
    out = []
    for opt in option_fields(cls):
        default = tuple(opt.default) if opt.option.repeat else opt.default
        if hasattr(ns, opt.name) and _value(opt, ns) != default:
            out.append(opt.flag)
    return out
