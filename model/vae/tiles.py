"""Where each rank's tile lies when the VAE is split spatially over several processes.

The latent grid (h, w) is cut into a gh x gw grid of tiles, one per rank (rank = row * gw + col).
Each tile owns a block of latent positions and is run with a halo of extra positions around it, so
that its convolutions see real neighbours near the cut; the halo is cropped off the result. This is
SoulX-FlashTalk's multi-GPU VAE (2-D grid as close to square tiles as the world size allows; a halo
of 2 latent positions for decode, 1 for encode, doubled on the inner side of edge tiles). Unlike it,
sizes need not divide by the grid: the cuts are spread evenly and tiles may differ by one position.

The split is an approximation: beyond the halo a tile sees zero padding instead of its neighbours,
and the VAE's mid-block attention sees only its own tile. `bench/vae_split.py` measures the cost.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    """One axis of a tile, in latent positions: [start, stop) is owned, [lo, hi) is run (owned + halo)."""

    start: int
    stop: int
    lo: int
    hi: int

    @property
    def size(self) -> int:
        return self.stop - self.start

    def owned(self, scale: int = 1) -> slice:
        """The owned part within the run part's output, at `scale` output positions per latent position."""
        return slice((self.start - self.lo) * scale, (self.stop - self.lo) * scale)

    def run(self, scale: int = 1) -> slice:
        """The run part within the whole input, at `scale` input positions per latent position."""
        return slice(self.lo * scale, self.hi * scale)

    def place(self, scale: int = 1) -> slice:
        """The owned part within the whole output."""
        return slice(self.start * scale, self.stop * scale)


@dataclass(frozen=True)
class Tile:
    rank: int
    rows: Span
    cols: Span


def grid_shape(h: int, w: int, world: int) -> tuple[int, int]:
    """(rows, cols) with rows * cols == world whose tiles are closest to square.

    Grids whose cuts divide h and w evenly are preferred (equal tiles, as the reference requires);
    a grid with more parts than positions along an axis is never chosen.
    """
    if world < 1:
        raise ValueError(f"world size must be >= 1, got {world}")
    options = [(gh, world // gh) for gh in range(1, world + 1) if world % gh == 0 and gh <= h and world // gh <= w]
    if not options:
        raise ValueError(f"a {h}x{w} latent cannot be split into {world} tiles")
    return min(options, key=lambda g: (bool(h % g[0] or w % g[1]), abs(h / g[0] - w / g[1]), g[0]))


def split_axis(total: int, parts: int, halo: int) -> list[Span]:
    """Cut [0, total) into `parts` near-equal owned spans, each run with `halo` positions either side.

    A span at an edge runs 2 * halo positions on its inner side instead (the reference's choice: every
    tile runs the same size, and the cut an edge tile sees is further from its owned part).
    """
    if halo < 0:
        raise ValueError(f"halo must be >= 0, got {halo}")
    cuts = [total * i // parts for i in range(parts + 1)]
    spans = []
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        lo, hi = a - halo, b + halo
        if lo < 0:  # an edge tile takes its missing halo on the inner side, as the reference does
            lo, hi = 0, hi - lo
        if hi > total:
            lo, hi = max(0, lo - (hi - total)), total
        spans.append(Span(a, b, lo, hi))
    return spans


def plan_tiles(h: int, w: int, world: int, halo: int) -> list[Tile]:
    """The tile of every rank for an h x w latent grid (index = rank)."""
    gh, gw = grid_shape(h, w, world)
    rows, cols = split_axis(h, gh, halo), split_axis(w, gw, halo)
    return [Tile(r * gw + c, rows[r], cols[c]) for r in range(gh) for c in range(gw)]
