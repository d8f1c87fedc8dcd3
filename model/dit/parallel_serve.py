"""Serve one DiT across several processes: rank 0 drives, the other ranks follow its calls.

Under `torchrun`, every rank loads the DiT and enables sequence parallelism, but only rank 0 runs
the application (server, engine, VAE, features). Rank 0 wraps its DiT in `BroadcastingDiT`: each
forward first broadcasts its inputs (a small header, then the tensors), then every rank runs the
same sequence-parallel forward and rank 0 returns the result. Ranks > 0 sit in `follow()`, which
receives calls until rank 0 sends the stop message. Everything above the DiT stays single-process.

    sp, device = init_from_env()
    dit = load_dit(...).to(device); dit.enable_sequence_parallel(sp)
    if sp.rank == 0:
        pipe.dit = BroadcastingDiT(dit, sp)      # run the server ...; finally pipe.dit.stop()
    else:
        follow(dit, sp)                          # returns when rank 0 stops
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .parallel import SequenceParallel
from .teacache import ResidualCache

logger = logging.getLogger(__name__)

_TENSORS = ("x", "t", "context", "clip_fea", "y", "audio", "ref_target_masks")
_STOP = "stop"


def _pad_context(context: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """A list of [Lc_i, D] -> [B, max Lc, D], zero-padded (the DiT zero-pads to text_len anyway)."""
    if isinstance(context, torch.Tensor):
        return context
    rows = list(context)
    out = rows[0].new_zeros(len(rows), max(r.shape[0] for r in rows), rows[0].shape[1])
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
    return out


class BroadcastingDiT(nn.Module):
    """Rank 0's DiT: every call is sent to the followers first, then run sequence-parallel everywhere."""

    def __init__(self, dit: nn.Module, sp: SequenceParallel) -> None:
        super().__init__()
        if sp.rank != 0:
            raise ValueError("BroadcastingDiT runs on rank 0; other ranks call follow()")
        self.dit = dit
        self.sp = sp
        self._cache_keys = itertools.count()
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.dit, name)

    def forward(self, x, t, context, clip_fea, y, audio, ref_target_masks=None, *, audio_scale: float = 1.0,
                capture: dict | None = None, residual_cache: ResidualCache | None = None) -> torch.Tensor:
        if capture is not None:
            raise ValueError("capture is not supported across processes; run single-process to inspect stages")
        tensors = dict(x=x, t=t.reshape(-1), context=_pad_context(context), clip_fea=clip_fea, y=y, audio=audio,
                       ref_target_masks=ref_target_masks)
        cache = None
        if residual_cache is not None:
            key = getattr(residual_cache, "_sp_key", None)
            if key is None:
                key = residual_cache._sp_key = next(self._cache_keys)  # type: ignore[attr-defined]
            cache = (key, residual_cache.reuse)
        header = {
            "tensors": {k: (tuple(v.shape), v.dtype) for k, v in tensors.items() if v is not None},
            "audio_scale": float(audio_scale),
            "cache": cache,
        }
        dist.broadcast_object_list([header], src=0, group=self.sp.group)
        device = self.dit.device
        for name in _TENSORS:
            v = tensors[name]
            if v is not None:
                tensors[name] = v = v.to(device).contiguous()
                dist.broadcast(v, src=0, group=self.sp.group)
        self.calls += 1
        return self.dit(**tensors, audio_scale=audio_scale, residual_cache=residual_cache)

    def stop(self) -> None:
        """Release the followers (they return from `follow`)."""
        dist.broadcast_object_list([_STOP], src=0, group=self.sp.group)


def follow(dit: nn.Module, sp: SequenceParallel) -> int:
    """Run rank 0's DiT calls on this rank until it stops; returns the number of calls served."""
    if sp.rank == 0:
        raise ValueError("rank 0 drives (BroadcastingDiT); follow() is for the other ranks")
    device = dit.device
    caches: dict[int, ResidualCache] = {}
    served = 0
    while True:
        box: list[Any] = [None]
        dist.broadcast_object_list(box, src=0, group=sp.group)
        header = box[0]
        if header == _STOP:
            logger.info("rank %d: %d DiT calls served, stopping", sp.rank, served)
            return served
        tensors: dict[str, torch.Tensor | None] = dict.fromkeys(_TENSORS)
        for name in _TENSORS:
            if name in header["tensors"]:
                shape, dtype = header["tensors"][name]
                buf = torch.empty(shape, dtype=dtype, device=device)
                dist.broadcast(buf, src=0, group=sp.group)
                tensors[name] = buf
        residual_cache = None
        if header["cache"] is not None:
            key, reuse = header["cache"]
            residual_cache = caches.setdefault(key, ResidualCache())
            residual_cache.reuse = reuse
        with torch.inference_mode():
            dit(**tensors, audio_scale=header["audio_scale"], residual_cache=residual_cache)
        served += 1
