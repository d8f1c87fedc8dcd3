"""The follower ranks of a sequence-parallel server load the DiT with the same speed options as rank 0."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch

import model.infinitetalk.assemble as setup
from model.dit.parallel import init_from_env
from model.dit.parallel_serve import stop_followers
from model.families import ModelOptions
from model.infinitetalk.assemble import run_follower

from ..helpers.ranks import spawn_ranks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, init_file: str, out: str, port: int) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    if rank == 0:
        sp, _ = init_from_env()
        stop_followers(sp)
        torch.distributed.destroy_process_group()
        return
    real_follow = setup.follow

    def follow(dit, sp, vae=None):  # a spy: records how the DiT was loaded, then follows for real
        Path(out, "compiled").write_text(str(all(b._compiled_call_impl is not None for b in dit.blocks)))
        return real_follow(dit, sp, vae)

    setup.follow = follow
    served = run_follower(ModelOptions(preset="tiny-random", compile=True, fp8="row"))
    Path(out, "served").write_text(str(served))


def test_followers_compile_their_dit_like_rank_0(tmp_path) -> None:
    spawn_ranks(_rank, (str(tmp_path), _free_port()), 2)
    assert (tmp_path / "compiled").read_text() == "True"
    assert (tmp_path / "served").read_text() == "0"
