"""Options of `infinitetalk-live bench`, defined once (the CLI's flags are generated from `BenchOptions`).

Light: no torch import, so `--help` stays fast.
"""

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Literal

from model.families.options import TINY_RANDOM, ModelOptions
from model.options import add_arguments, from_namespace, option

from ..backends.infinitetalk.options import InfiniteTalkOptions

SECTIONS = ("stages", "quality", "offline", "live", "sessions", "guidance")
SHAPES = ("tiny", "14b", "1.3b")
TINY_SIZE = (32, 32)
FLASHHEAD_SECTIONS = ("stages", "sessions")
"""What the bench measures of the flashhead presets (no guidance, no adaptive quality levels)."""


def _counts(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"give comma-separated session counts, e.g. 1,2,4, got {text!r}") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(s for s in text.split(",") if s)


@dataclass(frozen=True)
class BenchOptions:
    """What the bench runs. backend: the infinitetalk backend's options (None: the tiny random model).
    family: the model family the options name ("infinitetalk" or "flashhead"; set by `resolve`)."""

    shape: Literal["tiny", "14b", "1.3b"] | None = option(
        None, "model shape: tiny (default with --preset tiny-random, and with the flashhead presets: --weights, "
              "else a tiny random release), 14b (InfiniteTalk's real sizes) or 1.3b (SoulX-FlashHead's); the real "
              "sizes take random weights built on the device (use --device cuda)")
    seconds: float = option(2.0, "speech per session (default 2)")
    windows: int = option(3, "windows timed for the stage split (default 3)")
    sessions: tuple[int, ...] = option((1, 2, 4, 8), "concurrent session counts (default 1,2,4,8)", parse=_counts,
                                       metavar="N,N,...")
    max_batch: int = option(4, "most sessions' windows in one pass (default 4)")
    repeats: int = option(3, "repeats of the guidance timing (default 3)")
    sections: tuple[str, ...] = option(SECTIONS, f"sections, comma-separated: {','.join(SECTIONS)}", flag="--only",
                                       parse=_names, metavar="SECTION,...")
    threads: int | None = option(
        None, "torch CPU threads (default: torch's choice; 1 gives steadier figures on a busy machine)")
    server_overhead: bool = option(
        False, "also run bench/server_overhead.py (about a minute) and report server CPU per frame")
    backend: InfiniteTalkOptions | None = None
    family: str | None = None


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    """The bench's own flags (the model's come from the infinitetalk backend's options)."""
    add_arguments(p, BenchOptions, "bench")


def resolve(opts: BenchOptions) -> BenchOptions:
    """Fill in what the options leave to the bench: the shape (tiny for the tiny-random preset, else
    14b), the tiny model's size, and at least one window, batch and repeat. ValueError says what to fix."""
    unknown = [s for s in opts.sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown bench sections {unknown}: choose from {', '.join(SECTIONS)}")
    backend = opts.backend or InfiniteTalkOptions(ModelOptions(preset=TINY_RANDOM))
    model = backend.model
    if _family(model) == "flashhead":
        return _resolve_flashhead(opts, backend)
    if opts.shape == "1.3b":
        raise ValueError("--shape 1.3b is SoulX-FlashHead's: use it with --preset flashhead-pro")
    shape = opts.shape or ("tiny" if model.preset == TINY_RANDOM else "14b")
    if shape == "14b" and model.preset == TINY_RANDOM:
        model = dataclasses.replace(model, preset="infinitetalk-lowlatency")
    if shape == "tiny" and model.preset != TINY_RANDOM:
        raise ValueError("--shape tiny needs --preset tiny-random (the tiny model's window settings)")
    if shape == "tiny" and model.size is None:
        model = dataclasses.replace(model, size=TINY_SIZE)
    return dataclasses.replace(opts, shape=shape, backend=dataclasses.replace(backend, model=model),
                               windows=max(1, opts.windows), max_batch=max(1, opts.max_batch),
                               repeats=max(1, opts.repeats), family="infinitetalk")


def _family(model: ModelOptions) -> str:
    from model.families.registry import family_for  # imports torch: only once the bench runs

    return family_for(model).name


def _resolve_flashhead(opts: BenchOptions, backend: InfiniteTalkOptions) -> BenchOptions:
    """The flashhead presets: shape tiny (--weights, else a tiny random release at TINY_SIZE) or 1.3b;
    sections stages and sessions (the default of every section means both)."""
    shape = opts.shape or "tiny"
    if shape == "14b":
        raise ValueError("--shape 14b is InfiniteTalk's: the flashhead presets take --shape tiny or 1.3b")
    sections = FLASHHEAD_SECTIONS if opts.sections == SECTIONS else opts.sections
    other = [s for s in sections if s not in FLASHHEAD_SECTIONS]
    if other:
        raise ValueError(f"the flashhead presets bench {', '.join(FLASHHEAD_SECTIONS)}, not {', '.join(other)}")
    model = backend.model
    if shape == "tiny" and model.weights is None and model.size is None:
        model = dataclasses.replace(model, size=TINY_SIZE)
    return dataclasses.replace(opts, shape=shape, sections=sections, backend=dataclasses.replace(backend, model=model),
                               windows=max(1, opts.windows), family="flashhead")


def options_from_args(args: argparse.Namespace, backend: InfiniteTalkOptions) -> BenchOptions:
    return resolve(dataclasses.replace(from_namespace(BenchOptions, args), backend=backend))
