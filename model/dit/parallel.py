"""Sequence parallelism (Ulysses) for one DiT forward across the ranks of a process group.

Every rank holds the whole model and the same inputs. The video tokens are cut into equal
contiguous chunks along the sequence (zero-padded at the end so the length divides by the world
size); each rank runs every token-wise part of the blocks (modulation, norms, linears, FFN,
text/image cross-attention) on its own chunk only. Where tokens meet:

- self-attention: q, k, v of the chunk are exchanged by one all-to-all so each rank holds the
  whole sequence for num_heads / world heads; attention runs there (padding keys dropped), and a
  second all-to-all brings the result back to the chunk layout with every head;
- the multi-speaker reference-attention map (H >= 2) is computed on those head-split, full-length
  q/k (each rank sums over its own heads) and all-reduced, so every rank has the full map for the
  min-max normalisation over the sequence, then keeps its chunk's positions;
- the audio cross-attention is per latent frame: a chunk that starts or ends inside a frame
  attends to that frame's audio tokens (each rank computes the audio tokens of every frame);
- the head output is all-gathered along the sequence and the padding dropped.

The 3-D RoPE table is sliced per rank at the chunk's offset (identity rotations for padding).
This follows the reference's multi-GPU mode (xDiT `usp_*` functions: chunked padded sequence,
Ulysses all-to-all over heads, all-gathered output); unlike it, padding keys and padding tokens
never reach attention, the map or its min/max, so the result equals the single-GPU forward.

Collectives go through `torch.distributed`, so the same code runs on NCCL (GPUs) and gloo (CPU).
Inference only: the collectives are not differentiable here.

    dist.init_process_group("nccl")            # torchrun sets the rendezvous
    dit.enable_sequence_parallel(SequenceParallel())
    out = dit(...)                             # same call, same result on every rank
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

IDLE_WAIT = timedelta(days=365)
"""How long a rank may wait for the next call from rank 0 (the timeout of `SequenceParallel.idle_group`)."""


class SequenceParallel:
    """The process group a DiT forward is spread over (the default group when none is given)."""

    def __init__(self, group: dist.ProcessGroup | None = None) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError(
                "sequence parallelism needs torch.distributed initialised first: launch with torchrun and call "
                "torch.distributed.init_process_group('nccl') (or use init_from_env())"
            )
        self.group = group
        self.world = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self.collectives = 0  # collective calls issued (for tests and metrics)
        self._idle_group: dist.ProcessGroup | None = None

    def idle_group(self) -> dist.ProcessGroup:
        """A gloo group over the same ranks whose collectives wait up to `IDLE_WAIT`: for waiting on work.

        A served model's followers wait for rank 0's next call for as long as the server has no
        clients; on the main group (NCCL on GPUs) that wait would abort after its timeout (10 min by
        default). Made on first use, which is collective: every rank must first call it at the same
        point (`init_from_env` does, right after initialising).
        """
        if self._idle_group is None:
            ranks = None if self.group is None else dist.get_process_group_ranks(self.group)
            self._idle_group = dist.new_group(ranks, timeout=IDLE_WAIT, backend="gloo")
        return self._idle_group

    def check_heads(self, num_heads: int) -> None:
        if num_heads % self.world:
            raise ValueError(
                f"Ulysses sequence parallelism splits the {num_heads} attention heads across ranks; "
                f"world size {self.world} does not divide them (use e.g. {_divisors(num_heads)} processes)"
            )

    def shard(self, length: int) -> SequenceShard:
        """This rank's part of a sequence of `length` tokens."""
        return SequenceShard(self, length)


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(2, min(n, 16) + 1) if n % d == 0)


@dataclass(frozen=True)
class SequenceShard:
    """Where one rank's chunk sits in a `length`-token sequence, and the collectives on it.

    local = ceil(length / world) tokens per rank; padded = local * world; this rank holds global
    tokens [start, start + local), of which the first `valid` are real (the rest are padding).
    """

    sp: SequenceParallel
    length: int

    @property
    def world(self) -> int:
        return self.sp.world

    @property
    def rank(self) -> int:
        return self.sp.rank

    @property
    def local(self) -> int:
        return math.ceil(self.length / self.world)

    @property
    def padded(self) -> int:
        return self.local * self.world

    @property
    def start(self) -> int:
        return self.rank * self.local

    @property
    def valid(self) -> int:
        return max(0, min(self.local, self.length - self.start))

    # -------------------------------------------------------------- no communication
    def scatter(self, x: torch.Tensor, dim: int = 1, fill: float = 0.0) -> torch.Tensor:
        """This rank's chunk of a full-length tensor (every rank has it): [.., L, ..] -> [.., local, ..]."""
        if x.shape[dim] != self.length:
            raise ValueError(f"expected {self.length} tokens on dim {dim}, got {list(x.shape)}")
        pad = self.padded - self.length
        if pad:
            shape = list(x.shape)
            shape[dim] = pad
            x = torch.cat([x, x.new_full(shape, fill)], dim=dim)
        return x.narrow(dim, self.start, self.local)

    def head_range(self, num_heads: int) -> tuple[int, int]:
        """Global indices [lo, hi) of the heads this rank holds after `to_heads`."""
        per = num_heads // self.world
        return self.rank * per, (self.rank + 1) * per

    # -------------------------------------------------------------- collectives
    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """All ranks' chunks, in order, padding dropped: [B, local, ...] -> [B, length, ...]."""
        self.sp.collectives += 1
        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x.contiguous(), group=self.sp.group)
        return torch.cat(parts, dim=1)[:, : self.length]

    def to_heads(self, x: torch.Tensor) -> torch.Tensor:
        """Chunk layout -> head layout by one all-to-all: [..., n, local, d] -> [..., n/W, padded, d]."""
        self.sp.collectives += 1
        w = self.world
        *lead, n, local, d = x.shape
        if n % w:
            self.sp.check_heads(n)
        k = len(lead)
        send = x.reshape(*lead, w, n // w, local, d).movedim(k, 0).contiguous()  # [W(dest), *lead, n/W, local, d]
        recv = torch.empty_like(send)
        dist.all_to_all_single(recv, send, group=self.sp.group)  # [W(source rank), *lead, n/W, local, d]
        return recv.movedim(0, k + 1).reshape(*lead, n // w, w * local, d)

    def to_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Head layout -> chunk layout (inverse of `to_heads`): [..., n/W, padded, d] -> [..., n, local, d]."""
        self.sp.collectives += 1
        w = self.world
        *lead, hn, padded, d = x.shape
        k = len(lead)
        send = x.reshape(*lead, hn, w, padded // w, d).movedim(k + 1, 0).contiguous()  # [W(dest), *lead, n/W, local, d]
        recv = torch.empty_like(send)
        dist.all_to_all_single(recv, send, group=self.sp.group)  # [W(source: head group), ...]
        return recv.movedim(0, k).reshape(*lead, w * hn, padded // w, d)

    def all_reduce_sum(self, x: torch.Tensor) -> torch.Tensor:
        self.sp.collectives += 1
        x = x.contiguous()
        dist.all_reduce(x, op=dist.ReduceOp.SUM, group=self.sp.group)
        return x


def init_from_env(backend: str | None = None) -> tuple[SequenceParallel, torch.device]:
    """Initialise torch.distributed from torchrun's environment; NCCL on CUDA, gloo on CPU.

    Returns the strategy over the world group and this rank's device (cuda:LOCAL_RANK or cpu).
    """
    cuda = torch.cuda.is_available()
    if backend is None:
        backend = "nccl" if cuda else "gloo"
    if cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend)
    logger.info("sequence parallel: rank %d of %d on %s (%s)", dist.get_rank(), dist.get_world_size(), device, backend)
    sp = SequenceParallel()
    sp.idle_group()  # now, while every rank is at the same point (loading weights takes uneven time)
    return sp, device
