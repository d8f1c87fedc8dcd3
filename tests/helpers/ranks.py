"""Run a function in N forked processes that join one gloo process group (the multi-GPU code on CPU)."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch.multiprocessing as mp


def spawn_ranks(fn: Callable[..., None], args: tuple[Any, ...], world: int, timeout_s: float = 180) -> None:
    """Call fn(rank, init_file, *args) in `world` forked processes; raise if any fails or runs too long.

    fn calls `dist.init_process_group("gloo", init_method=f"file://{init_file}", ...)` itself.
    """
    fd, init_file = tempfile.mkstemp(prefix="ranks_")
    os.close(fd)
    os.unlink(init_file)  # the file store must not exist before the first rank creates it
    ctx = mp.start_processes(fn, args=(init_file, *args), nprocs=world, join=False, start_method="fork")
    deadline = time.monotonic() + timeout_s
    while not ctx.join(timeout=1.0):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.terminate()
            raise TimeoutError(f"ranks still running after {timeout_s:.0f} s")
