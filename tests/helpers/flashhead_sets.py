"""Reading FlashHead parity sets (golden_flashhead, tools/flashhead_vectors.py): chunk counts and recorded draws."""

from __future__ import annotations

from torch import Tensor

from model.flashhead.loop import ChunkNoise


def chunk_count(g: dict[str, Tensor], prefix: str) -> int:
    """How many chunks a case recorded (keys `{prefix}0`, `{prefix}1`, ...)."""
    return len([k for k in g if k.startswith(prefix) and k[len(prefix):].isdigit()])


def chunk_noise(g: dict[str, Tensor], c: int) -> ChunkNoise:
    """Chunk c's recorded draws: the initial noise, then one per step."""
    steps = g["timesteps"].numel() - 1
    return ChunkNoise(g[f"noise{c}.init"], tuple(g[f"noise{c}.{k}"] for k in range(steps)))
