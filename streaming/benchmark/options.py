"""Options of `infinitetalk-live bench` (light: no torch import, so `--help` stays fast)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

SECTIONS = ("stages", "quality", "offline", "live", "sessions", "guidance")
SHAPES = ("tiny", "14b")
TINY_SIZE = (32, 32)


@dataclass(frozen=True)
class BenchOptions:
    """shape: "tiny" or "14b"; backend: generation options (preset, size, frames, steps, scales, device)."""

    shape: str = "tiny"
    backend: Any = None  # InfiniteTalkOptions; None -> the tiny-random preset
    seconds: float = 2.0
    windows: int = 3
    sessions: tuple[int, ...] = (1, 2, 4, 8)
    max_batch: int = 4
    repeats: int = 3
    sections: tuple[str, ...] = SECTIONS
    server_overhead: bool = False
    threads: int | None = None


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    """Bench options (the generation options come from the CLI's shared infinitetalk group)."""
    g = p.add_argument_group("bench")
    g.add_argument("--shape", choices=SHAPES, default=None,
                   help="model shape: tiny (default with --preset tiny-random) or 14b (real sizes, random weights, "
                        "built on the device; use --device cuda)")
    g.add_argument("--seconds", type=float, default=2.0, help="speech per session (default 2)")
    g.add_argument("--windows", type=int, default=3, help="windows timed for the stage split (default 3)")
    g.add_argument("--sessions", default="1,2,4,8", help="concurrent session counts (default 1,2,4,8)")
    g.add_argument("--max-batch", type=int, default=4, help="most sessions' windows in one pass (default 4)")
    g.add_argument("--repeats", type=int, default=3, help="repeats of the guidance timing (default 3)")
    g.add_argument("--only", default=",".join(SECTIONS), help=f"sections, comma-separated: {','.join(SECTIONS)}")
    g.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 gives steadier figures on a busy machine)")
    g.add_argument("--server-overhead", action="store_true",
                   help="also run bench/server_overhead.py (about a minute) and report server CPU per frame")


def options_from_args(args: argparse.Namespace, backend: dict) -> BenchOptions:
    sections = tuple(s for s in args.only.split(",") if s)
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown bench sections {unknown}: choose from {', '.join(SECTIONS)}")
    shape = args.shape or ("tiny" if backend.get("preset") == "tiny-random" else "14b")
    if shape == "14b" and backend.get("preset") == "tiny-random":
        backend = {**backend, "preset": "infinitetalk-lowlatency"}
    if shape == "tiny" and backend.get("preset") != "tiny-random":
        raise ValueError("--shape tiny needs --preset tiny-random (the tiny model's window settings)")
    if shape == "tiny" and backend.get("size") is None:
        backend = {**backend, "size": TINY_SIZE}
    from ..infinitetalk_setup import InfiniteTalkOptions  # imports torch: only once the options are valid

    return BenchOptions(shape=shape, backend=InfiniteTalkOptions(**backend), seconds=args.seconds,
                        windows=max(1, args.windows), sessions=tuple(int(x) for x in args.sessions.split(",") if x),
                        max_batch=max(1, args.max_batch), repeats=max(1, args.repeats), sections=sections,
                        server_overhead=args.server_overhead, threads=args.threads)


