"""Serve one model across several processes: rank 0 drives, the other ranks follow its calls.

Under `torchrun`, every rank loads the DiT and enables sequence parallelism, but only rank 0 runs
the application (server, engine, features). Rank 0 wraps its DiT in `BroadcastingDiT`: each
forward first broadcasts its inputs (a small header, then the tensors), then every rank runs the
same sequence-parallel forward and rank 0 returns the result. Optionally (`BroadcastingVAE`) the
VAE's encode and decode are sent the same way and split spatially over the ranks
(`model.vae.split`). Ranks > 0 sit in `follow()`, which receives calls until rank 0 sends the stop
message. Everything else stays single-process.

    sp, device = init_from_env()
    dit = load_dit(...).to(device)
    if sp.rank == 0:
        leader = lead(dit, vae, ParallelPlan(sp))   # ParallelPlan(sp, vae_split=True): every rank needs the VAE
        pipe = InfiniteTalkPipeline(dit, leader.vae, ..., dit_forward=leader.dit_forward)
        ...                                         # run the server; at its end:
        leader.stop()                               # releases the followers
    else:
        dit.enable_sequence_parallel(sp)
        follow(dit, sp, vae=None or the VAE)        # returns when rank 0 stops

Calls are sent and run in order from one thread on rank 0 (the generator worker), so every rank
sees the same sequence of collectives.

Waiting for work never times out: a server may have no clients for days, while a collective on the
main group (NCCL on GPUs) aborts after its timeout (10 minutes by default) and torchrun then tears
every rank down. So each call's header (and the stop message) travels on a gloo group of its own
whose timeout is `IDLE_WAIT`; the call's tensors and its forward's collectives follow on the main
group at once, well inside its timeout. If rank 0 dies, the followers' wait ends with the lost
connection.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from model.vae import VAEConfig, WanVAE
from model.vae.split import DECODE_HALO, ENCODE_HALO, split_decode_stream, split_encode

from .parallel import SequenceParallel
from .teacache import ResidualCache

if TYPE_CHECKING:
    from .transformer import InfiniteTalkDiT

logger = logging.getLogger(__name__)

_STOP = "stop"
_DIT, _VAE_ENCODE, _VAE_DECODE = "dit", "vae_encode", "vae_decode"


def _pad_context(context: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """A list of [Lc_i, D] -> [B, max Lc, D], zero-padded (the DiT zero-pads to text_len anyway)."""
    if isinstance(context, torch.Tensor):
        return context
    rows = list(context)
    out = rows[0].new_zeros(len(rows), max(r.shape[0] for r in rows), rows[0].shape[1])
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
    return out


def _send(sp: SequenceParallel, op: str, tensors: dict[str, torch.Tensor | None], device: torch.device,
          **args: Any) -> dict[str, torch.Tensor | None]:
    """Broadcast one call (a header with op, args and tensor specs, then the tensors) from rank 0.

    Returns the tensors as sent: moved to `device` and made contiguous."""
    header = {"op": op, "args": args,
              "tensors": {k: (tuple(v.shape), v.dtype) for k, v in tensors.items() if v is not None}}
    dist.broadcast_object_list([header], src=0, group=sp.idle_group())
    sent: dict[str, torch.Tensor | None] = dict.fromkeys(tensors)
    for name in header["tensors"]:
        v = tensors[name]
        assert v is not None
        sent[name] = v = v.to(device).contiguous()
        dist.broadcast(v, src=0, group=sp.group)
    return sent


def _receive(sp: SequenceParallel, device: torch.device) -> tuple[Any, dict[str, torch.Tensor]]:
    """The next call from rank 0: (header, its tensors), or (_STOP, {})."""
    box: list[Any] = [None]
    dist.broadcast_object_list(box, src=0, group=sp.idle_group())
    header = box[0]
    if header == _STOP:
        return header, {}
    tensors = {}
    for name, (shape, dtype) in header["tensors"].items():
        buf = torch.empty(shape, dtype=dtype, device=device)
        dist.broadcast(buf, src=0, group=sp.group)
        tensors[name] = buf
    return header, tensors


class BroadcastingDiT(nn.Module):
    """Rank 0's DiT: every call is sent to the followers first, then run sequence-parallel everywhere."""

    def __init__(self, dit: nn.Module, sp: SequenceParallel) -> None:
        super().__init__()
        if sp.rank != 0:
            raise ValueError("BroadcastingDiT runs on rank 0; other ranks call follow()")
        self.dit = dit
        self.sp = sp
        sp.idle_group()
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
        cache = None
        if residual_cache is not None:
            key = getattr(residual_cache, "_sp_key", None)
            if key is None:
                key = residual_cache._sp_key = next(self._cache_keys)  # type: ignore[attr-defined]
            cache = (key, residual_cache.reuse)
        tensors = _send(self.sp, _DIT, dict(x=x, t=t.reshape(-1), context=_pad_context(context), clip_fea=clip_fea,
                                            y=y, audio=audio, ref_target_masks=ref_target_masks),
                        self.dit.device, audio_scale=float(audio_scale), cache=cache)
        self.calls += 1
        return self.dit(**tensors, audio_scale=audio_scale, residual_cache=residual_cache)

    def stop(self) -> None:
        """Release the followers (they return from `follow`)."""
        stop_followers(self.sp)


def stop_followers(sp: SequenceParallel) -> None:
    """Rank 0: release the followers (they return from `follow`)."""
    dist.broadcast_object_list([_STOP], src=0, group=sp.idle_group())


class BroadcastingVAE:
    """Rank 0's VAE: encode and decode are sent to the followers and split spatially over every rank.

    Same calls as `WanVAE` (encode, decode_stream, decode; cfg, dtype). The result is the whole
    video or latent on rank 0 (see `model.vae.split` for how, and for what the split costs).
    """

    def __init__(self, vae: WanVAE, sp: SequenceParallel, decode_halo: int = DECODE_HALO,
                 encode_halo: int = ENCODE_HALO) -> None:
        if sp.rank != 0:
            raise ValueError("BroadcastingVAE runs on rank 0; other ranks call follow(..., vae=...)")
        self.vae = vae
        self.sp = sp
        sp.idle_group()
        self.decode_halo = decode_halo
        self.encode_halo = encode_halo
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.vae, name)

    @property
    def cfg(self) -> VAEConfig:
        return self.vae.cfg

    @property
    def dtype(self) -> torch.dtype:
        return self.vae.dtype

    @property
    def device(self) -> torch.device:
        return self.vae.conv2.weight.device

    @torch.no_grad()
    def encode(self, video: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        sent = _send(self.sp, _VAE_ENCODE, {"video": video}, self.device, normalize=normalize, halo=self.encode_halo)
        self.calls += 1
        out = split_encode(self.vae, sent["video"], self.sp.group, self.encode_halo, normalize)  # type: ignore[arg-type]
        assert out is not None
        return out

    @torch.no_grad()
    def decode_stream(self, z: torch.Tensor, clamp: bool = True) -> Iterator[torch.Tensor]:
        sent = _send(self.sp, _VAE_DECODE, {"z": z}, self.device, clamp=clamp, halo=self.decode_halo)
        self.calls += 1
        chunks = split_decode_stream(self.vae, sent["z"], self.sp.group, self.decode_halo, clamp)  # type: ignore[arg-type]
        try:
            for chunk in chunks:
                assert chunk is not None
                yield chunk
        finally:
            chunks.close()  # finishes the remaining gathers, so the followers stay in step

    @torch.no_grad()
    def decode(self, z: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        return torch.cat(list(self.decode_stream(z, clamp)), dim=2)


@dataclass(frozen=True)
class ParallelPlan:
    """How rank 0 spreads its model: the DiT over `sp` always, the VAE too with `vae_split` (spatial
    tiles with `decode_halo` latent positions around each; encode uses half, rounded up)."""

    sp: SequenceParallel
    vae_split: bool = False
    decode_halo: int = DECODE_HALO

    def __post_init__(self) -> None:
        if self.decode_halo < 0:
            raise ValueError(f"the VAE split halo must be >= 0 latent positions, got {self.decode_halo}")

    @property
    def encode_halo(self) -> int:
        return (self.decode_halo + 1) // 2

    def describe(self) -> str:
        text = f"DiT split over {self.sp.world} processes (sequence parallel)"
        return text + (f", VAE split into spatial tiles (halo {self.decode_halo})" if self.vae_split else "")


@dataclass(frozen=True)
class Leader:
    """Rank 0's networks: what sampling calls instead of the DiT, the VAE to use, and `stop` to release
    the followers when the model is done with."""

    dit_forward: BroadcastingDiT
    vae: WanVAE | BroadcastingVAE

    def stop(self) -> None:
        self.dit_forward.stop()


def lead(dit: InfiniteTalkDiT, vae: WanVAE, plan: ParallelPlan) -> Leader:
    """Rank 0: spread `dit` over the plan's ranks and wrap it (and the VAE with vae_split) so every call
    reaches the followers first."""
    dit.enable_sequence_parallel(plan.sp)
    split_vae = BroadcastingVAE(vae, plan.sp, plan.decode_halo, plan.encode_halo) if plan.vae_split else vae
    return Leader(BroadcastingDiT(dit, plan.sp), split_vae)


def follow(dit: nn.Module, sp: SequenceParallel, vae: WanVAE | None = None) -> int:
    """Run rank 0's calls on this rank until it stops; returns the number of calls served.

    vae: needed when rank 0 splits its VAE (`BroadcastingVAE`); a VAE call without it is an error.
    """
    if sp.rank == 0:
        raise ValueError("rank 0 drives (BroadcastingDiT); follow() is for the other ranks")
    device = dit.device
    sp.idle_group()
    caches: dict[int, ResidualCache] = {}
    served = 0
    while True:
        header, tensors = _receive(sp, device)
        if header == _STOP:
            logger.info("rank %d: %d calls served, stopping", sp.rank, served)
            return served
        op, args = header["op"], header["args"]
        with torch.inference_mode():
            if op == _DIT:
                residual_cache = None
                if args["cache"] is not None:
                    key, reuse = args["cache"]
                    residual_cache = caches.setdefault(key, ResidualCache())
                    residual_cache.reuse = reuse
                dit(**tensors, audio_scale=args["audio_scale"], residual_cache=residual_cache)
            elif vae is None:
                raise RuntimeError(f"rank 0 sent a split VAE call ({op}) but this rank has no VAE: start every "
                                   "rank with the same options (--vae-split)")
            elif op == _VAE_ENCODE:
                split_encode(vae, tensors["video"], sp.group, args["halo"], args["normalize"])
            elif op == _VAE_DECODE:
                for _ in split_decode_stream(vae, tensors["z"], sp.group, args["halo"], args["clamp"]):
                    pass
            else:
                raise RuntimeError(f"unknown call {op!r} from rank 0 (ranks running different versions?)")
        served += 1
