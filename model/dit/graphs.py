"""CUDA graphs for the DiT forward: capture once per input signature, then replay.

A live session's windows all have the same shape (batch of guidance branches, latent size, text
length padded to text_len, speakers), so after the first window every DiT call can be one graph
replay instead of thousands of kernel launches; for few-step sampling on a fast GPU the launch
overhead is otherwise a visible part of each step.

`CudaGraphDiT(dit)` is called exactly like the DiT. For each new signature (shapes, dtypes,
device, audio_scale) it runs the forward a few times on a side stream (warm-up: cuDNN/flash
autotuning, RoPE tables, allocator), captures one forward into a CUDA graph with static input
buffers, and replays it from then on (inputs copied into the buffers, the output cloned out). At
most `max_graphs` graphs are kept (least recently used dropped). Everything that cannot be
captured runs eagerly: CPU tensors, `capture=`, TeaCache residual caches (a Python-side branch), a
signature whose capture failed (logged once).

Memory: every graph of one `CudaGraphDiT` is captured into one shared memory pool. That is safe
because replays never overlap (one worker thread) and each replay's output is cloned out before
the next, so the graphs may reuse each other's activation memory; separate pools would hold one
window's activations per graph. A graph also keeps the RoPE tables it read alive (the DiT's table
cache may drop them, and a freed table's memory reused by anything else would change a replay's
output silently). Streams, pool and capture all use the model's device, not the thread's current one.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

INPUT_NAMES = ("x", "t", "context", "clip_fea", "y", "audio", "ref_target_masks")


def _sig(t: Tensor | None) -> tuple | None:
    return None if t is None else (tuple(t.shape), str(t.dtype).removeprefix("torch."), str(t.device))


def graph_key(inputs: dict[str, Tensor | None], audio_scale: float) -> tuple:
    """What a captured graph is specialised on: every input's shape, dtype and device, and audio_scale.

    Values (timestep, latents, audio, text) are not part of the key: they are copied in per call.
    """
    return tuple(_sig(inputs[name]) for name in INPUT_NAMES) + (float(audio_scale),)


@dataclass
class GraphStats:
    captures: int = 0
    replays: int = 0
    eager: int = 0
    evictions: int = 0
    failures: int = 0
    keys: list[tuple] = field(default_factory=list)


class _CapturedForward:
    """One captured forward: static input buffers, the graph, its output buffer, what it must keep alive."""

    def __init__(self, fn: Callable[..., Tensor], inputs: dict[str, Tensor | None], audio_scale: float,
                 warmup: int, device: torch.device, pool: tuple, keep: list[Tensor]) -> None:
        self.static = {k: (v.clone() if v is not None else None) for k, v in inputs.items()}
        self.keep = keep  # tensors the graph reads that no input holds (RoPE tables): alive while it is
        with torch.cuda.device(device):
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(warmup):
                    fn(**self.static, audio_scale=audio_scale)
            torch.cuda.current_stream(device).wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph, pool=pool):
                self.output = fn(**self.static, audio_scale=audio_scale)

    def __call__(self, inputs: dict[str, Tensor | None]) -> Tensor:
        for k, v in inputs.items():
            if v is not None:
                self.static[k].copy_(v)
        self.graph.replay()
        return self.output.clone()


class CudaGraphDiT:
    """The DiT's forward through cached CUDA graphs (eager where graphs do not apply).

    device: where the graphs are captured and replayed (default: the DiT's device).
    """

    def __init__(self, dit: torch.nn.Module, max_graphs: int = 4, warmup: int = 2,
                 device: torch.device | str | None = None) -> None:
        if max_graphs < 1:
            raise ValueError("max_graphs must be >= 1")
        self.dit = dit
        self.device = torch.device(device) if device is not None else dit.device
        self.max_graphs = max_graphs
        self.warmup = warmup
        self.stats = GraphStats()
        self._graphs: OrderedDict[tuple, object] = OrderedDict()
        self._failed: set[tuple] = set()
        self._pool: tuple | None = None  # one memory pool for every graph (see the module docstring)

    # hooks (tests replace these to exercise the cache on CPU)
    def capturable(self, x: Tensor) -> bool:
        return x.is_cuda and torch.cuda.is_available()

    def _capture(self, inputs: dict[str, Tensor | None], audio_scale: float) -> Callable[[dict], Tensor]:
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        with self.dit._rope.recording() as used:
            return _CapturedForward(self.dit, inputs, audio_scale, self.warmup, self.device, self._pool, used)

    # ------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Drop every graph (call after replacing parameters, e.g. merging a LoRA into new tensors)."""
        self._graphs.clear()
        self._failed.clear()

    def __call__(
        self,
        x: Tensor,
        t: Tensor,
        context: Tensor | Sequence[Tensor],
        clip_fea: Tensor,
        y: Tensor,
        audio: Tensor,
        ref_target_masks: Tensor | None = None,
        *,
        audio_scale: float = 1.0,
        **extra,
    ) -> Tensor:
        """Same arguments and result as `InfiniteTalkDiT.forward`."""
        if any(v is not None for v in extra.values()) or not self.capturable(x):
            self.stats.eager += 1
            return self.dit(x, t, context, clip_fea, y, audio, ref_target_masks, audio_scale=audio_scale, **extra)
        b = x.shape[0]
        if not isinstance(context, Tensor) or context.shape[1] != self.dit.cfg.text_len:
            context = self.dit._pad_text(context, b)  # a static [B, text_len, text_dim] buffer
        inputs = dict(x=x, t=t.reshape(-1).expand(b) if t.numel() == 1 else t, context=context,
                      clip_fea=clip_fea, y=y, audio=audio, ref_target_masks=ref_target_masks)
        key = graph_key(inputs, audio_scale)
        entry = self._graphs.get(key)
        if entry is None and key not in self._failed:
            try:
                entry = self._capture(inputs, audio_scale)
            except RuntimeError as e:
                self._failed.add(key)
                self.stats.failures += 1
                logger.warning("CUDA graph capture failed for %s (%s); this shape runs eagerly", key, e)
            else:
                self.stats.captures += 1
                self.stats.keys.append(key)
                self._graphs[key] = entry
                if len(self._graphs) > self.max_graphs:
                    self._graphs.popitem(last=False)
                    self.stats.evictions += 1
        if entry is None:
            self.stats.eager += 1
            return self.dit(**inputs, audio_scale=audio_scale)
        self._graphs.move_to_end(key)
        self.stats.replays += 1
        return entry(inputs)
