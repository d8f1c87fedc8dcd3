"""Rotary position embeddings of the DiT: 3-D (frame, row, column) for self-attention and 1-D
(fractional speaker positions) for the multi-speaker audio cross-attention.

Both rotate consecutive channel pairs (2i, 2i+1) as complex numbers. Tables are plain tensors,
built lazily per (grid, device) and cached by `RopeCache`; they are never parameters or buffers,
so they are absent from state dicts and a model built on the meta device needs none.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch

logger = logging.getLogger(__name__)


def rope_3d_split(head_dim: int) -> tuple[int, int, int]:
    """Complex channels given to (frame, row, column): [c - 2*(c//3), c//3, c//3] with c = head_dim/2."""
    c = head_dim // 2
    return c - 2 * (c // 3), c // 3, c // 3


def _axis_angles(n_pos: int, n_ch: int, theta: float) -> torch.Tensor:
    """angles[p, j] = p * theta^(-j/n_ch) in float64: [n_pos, n_ch]."""
    inv = torch.pow(torch.tensor(theta, dtype=torch.float64), -torch.arange(n_ch, dtype=torch.float64) / n_ch)
    return torch.arange(n_pos, dtype=torch.float64)[:, None] * inv[None, :]


def rope_3d_table(grid: tuple[int, int, int], head_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """Unit complex rotations for every token of a (frames, rows, cols) grid, token order frame-major.

    Returns a complex128 CPU tensor [f*h*w, head_dim/2]. Angles are computed in float64 as in the
    reference; positions start at 0 on every axis.
    """
    f, h, w = grid
    cf, ch, cw = rope_3d_split(head_dim)
    af = _axis_angles(f, cf, theta)[:, None, None, :].expand(f, h, w, cf)
    ah = _axis_angles(h, ch, theta)[None, :, None, :].expand(f, h, w, ch)
    aw = _axis_angles(w, cw, theta)[None, None, :, :].expand(f, h, w, cw)
    angles = torch.cat([af, ah, aw], dim=-1).reshape(f * h * w, head_dim // 2)
    return torch.polar(torch.ones_like(angles), angles)


def rope_1d_freqs(positions: torch.Tensor, head_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """Unit complex rotations for fractional 1-D positions, angles in float32 like the reference.

    positions: [...] -> complex64 [..., head_dim/2]; inv_freq_j = 1 / theta^(2j/head_dim).
    """
    exponent = torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim
    inv_freq = 1.0 / (theta**exponent)
    angles = positions.float()[..., None] * inv_freq
    return torch.polar(torch.ones_like(angles), angles)


def rope_1d_pairs(positions: torch.Tensor, head_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """`rope_1d_freqs` as real (cos, sin) pairs: float32 [..., head_dim/2, 2] (no complex tensors)."""
    exponent = torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim
    angles = positions.float()[..., None] * (1.0 / (theta**exponent))
    return torch.stack([angles.cos(), angles.sin()], dim=-1)


def apply_rotary(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (2i, 2i+1) of x, read as complex numbers, by `freqs`; computes in float32.

    x: [..., L, d]; freqs: complex64 broadcastable to [..., L, d/2], or the same rotations as real
    (cos, sin) pairs [..., L, d/2, 2]. Returns x's dtype.
    """
    # Real arithmetic on (cos, sin) pairs instead of a complex multiply: the same float32 products,
    # and compilers (inductor) can fuse it, which they cannot do for complex tensors.
    xr = x.float().unflatten(-1, (-1, 2))
    f = torch.view_as_real(freqs) if freqs.is_complex() else freqs
    cos, sin = f[..., 0], f[..., 1]
    a, b = xr[..., 0], xr[..., 1]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2).to(x.dtype)


class RopeCache:
    """Per-(grid, device) cache of 3-D RoPE tables as real (cos, sin) pairs: float32 [L, head_dim/2, 2].

    Real pairs rather than complex numbers: torch.compile gives complex inputs static sizes, so a
    complex table would pin every compiled block to one token count. Held as a plain attribute of the
    transformer (not a module, not a buffer). Bounded: the oldest entry is dropped past `max_entries`
    (a server sees a handful of window shapes). A CUDA graph that reads a table keeps it alive on its
    own (`recording`), so dropping it here never frees memory a graph still replays from.
    """

    def __init__(self, head_dim: int, theta: float = 10000.0, max_entries: int = 16) -> None:
        self.head_dim = head_dim
        self.theta = theta
        self.max_entries = max_entries
        self._tables: dict[tuple[int, int, int, str], torch.Tensor] = {}
        self._recording: list[torch.Tensor] | None = None

    def get(self, grid: tuple[int, int, int], device: torch.device) -> torch.Tensor:
        key = (int(grid[0]), int(grid[1]), int(grid[2]), str(device))
        hit = self._tables.get(key)
        if hit is None:
            table = rope_3d_table(key[:3], self.head_dim, self.theta).to(dtype=torch.complex64)
            hit = torch.view_as_real(table).to(device, copy=True)  # a tensor of its own, not a view of a complex one
            if len(self._tables) >= self.max_entries:
                self._tables.pop(next(iter(self._tables)))
            self._tables[key] = hit
            logger.debug("built 3-D RoPE table for grid %s on %s", key[:3], device)
        if self._recording is not None:
            self._recording.append(hit)
        return hit

    @contextmanager
    def recording(self) -> Iterator[list[torch.Tensor]]:
        """Collect every table handed out inside the block (a CUDA graph capture holds on to them)."""
        self._recording = used = []
        try:
            yield used
        finally:
            self._recording = None

    def clear(self) -> None:
        self._tables.clear()
