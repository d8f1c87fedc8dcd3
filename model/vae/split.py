"""VAE encode and streaming decode split spatially over the ranks of a process group.

Every rank calls the same function with the same input. Each runs the VAE on its own tile (see
`tiles.py`), crops the halo off, and the owned blocks are gathered to the group's first rank, which
stitches the whole result; the other ranks get None. On GPUs this divides the VAE's work (the
largest cost after the DiT) by the world size, as SoulX-FlashTalk's multi-GPU mode does; on CPU the
gloo backend runs the same code, which is how it is tested.

Tiles may differ in size by a position, so each block is zero-padded to the largest before the
gather (a collective needs equal shapes) and cut back after it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from .tiles import Tile, plan_tiles
from .wan_vae import WanVAE

DECODE_HALO = 2  # latent positions, as the reference's decode
ENCODE_HALO = 1  # latent positions (8 pixels), as the reference's encode


def _group_info(group: dist.ProcessGroup | None) -> tuple[int, int, int]:
    """(world, rank in group, global rank of the group's first member)."""
    first = dist.get_global_rank(group, 0) if group is not None else 0
    return dist.get_world_size(group), dist.get_rank(group), first


def _gather_tiles(block: Tensor, tiles: Sequence[Tile], full: tuple[int, int], scale: int,
                  group: dist.ProcessGroup | None) -> Tensor | None:
    """Gather every rank's owned block [..., th, tw] to the first rank and stitch [..., H, W] there."""
    world, rank, first = _group_info(group)
    max_h = max(t.rows.size for t in tiles) * scale
    max_w = max(t.cols.size for t in tiles) * scale
    padded = F.pad(block, (0, max_w - block.shape[-1], 0, max_h - block.shape[-2])).contiguous()
    if rank != 0:
        dist.gather(padded, None, dst=first, group=group)
        return None
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.gather(padded, parts, dst=first, group=group)
    out = padded.new_empty(*padded.shape[:-2], full[0] * scale, full[1] * scale)
    for tile, part in zip(tiles, parts, strict=True):
        out[..., tile.rows.place(scale), tile.cols.place(scale)] = \
            part[..., : tile.rows.size * scale, : tile.cols.size * scale]
    return out


def split_encode(vae: WanVAE, video: Tensor, group: dist.ProcessGroup | None = None, halo: int = ENCODE_HALO,
                 normalize: bool = True) -> Tensor | None:
    """`vae.encode(video, normalize)` with the work split over the group: the whole latent on the first rank."""
    s = vae.cfg.spatial_stride
    if video.ndim != 5 or video.shape[-2] % s or video.shape[-1] % s:
        raise ValueError(f"split encode expects video [B, 3, T, H, W] with H, W multiples of {s}, "
                         f"got {list(video.shape)}")
    h, w = video.shape[-2] // s, video.shape[-1] // s
    world, rank, _ = _group_info(group)
    tiles = plan_tiles(h, w, world, halo)
    tile = tiles[rank]
    latent = vae.encode(video[..., tile.rows.run(s), tile.cols.run(s)], normalize=normalize)
    return _gather_tiles(latent[..., tile.rows.owned(), tile.cols.owned()], tiles, (h, w), 1, group)


def _tile_chunks(vae: WanVAE, z: Tensor, group: dist.ProcessGroup | None, halo: int,
                 clamp: bool) -> Iterator[Tensor | None]:
    h, w = z.shape[-2:]
    world, rank, _ = _group_info(group)
    tiles = plan_tiles(h, w, world, halo)
    tile = tiles[rank]
    s = vae.cfg.spatial_stride
    for chunk in vae.decode_stream(z[..., tile.rows.run(), tile.cols.run()], clamp=clamp):
        yield _gather_tiles(chunk[..., tile.rows.owned(s), tile.cols.owned(s)], tiles, (h, w), s, group)


def split_decode_stream(vae: WanVAE, z: Tensor, group: dist.ProcessGroup | None = None, halo: int = DECODE_HALO,
                        clamp: bool = True) -> Iterator[Tensor | None]:
    """`vae.decode_stream(z, clamp)` with the work split over the group, one gather per latent frame.

    The first rank gets each whole chunk [B, 3, n, H, W]; the others get None per chunk. If the
    consumer stops early (a cancelled window), the remaining chunks are still decoded and gathered
    without being yielded, so the other ranks, which decode them all, stay in step.
    """
    if z.ndim != 5 or z.shape[1] != vae.cfg.z_dim:
        raise ValueError(f"split decode expects latents [B, {vae.cfg.z_dim}, T, h, w], got {list(z.shape)}")
    chunks = _tile_chunks(vae, z, group, halo, clamp)
    try:
        for chunk in chunks:  # noqa: UP028 - `yield from` would close `chunks` when this is closed
            yield chunk
    finally:
        for _ in chunks:
            pass
