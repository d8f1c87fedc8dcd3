"""Turn planned reads into final tensors: read -> device -> dequantise -> + LoRA -> cast, one at a time.

Memory: a tensor that needs no conversion (CPU target, same dtype, no LoRA/scale) is read straight into
its final buffer. Every other tensor is read into one of two staging buffers, allocated once at the size
of the largest such tensor (pinned for CUDA targets) and reused, so the transient memory stays bounded by
2 x the largest tensor. (Fresh buffers per tensor would fragment the C heap: freed fp32 reads interleaved
with their smaller bf16 results are never returned to the OS, and a fp32 -> bf16 load measured 2.3 x the
model's size instead of ~1 x.) One background thread reads the next tensor while this one is processed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from model.fp8 import is_fp8, quantize_fp8

from .fp8 import dequantize
from .lora import LoraPatch, LoraPlan, lora_delta
from .sources import TensorInfo, TensorSource


@dataclass(frozen=True)
class Job:
    """One model tensor to produce."""

    name: str
    source: TensorSource
    key: str
    info: TensorInfo
    want: torch.dtype
    shape: tuple[int, ...]
    scale_key: str | None = None
    patches: tuple[tuple[LoraPlan, LoraPatch], ...] = ()
    scaled_fp8: bool = False  # the target is an fp8 weight with its own per-tensor scale: yield (weight, scale)

    def direct(self, device: torch.device) -> bool:
        """Can the file's bytes become the final tensor as they are?"""
        return (device.type == "cpu" and not self.scale_key and not self.patches and not self.scaled_fp8
                and self.info.dtype == self.want)


def _shares(a: torch.Tensor, b: torch.Tensor | None) -> bool:
    return b is not None and a.device == b.device and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def convert_scaled_fp8(
    job: Job, raw: torch.Tensor, scale: torch.Tensor | None, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp8 weight, float32 scalar scale) for an fp8-with-scale target (e.g. model.dit FP8Linear).

    A file that already stores this fp8 format with one scale (or none) is taken byte for byte;
    anything else (bf16/fp32 weights, per-channel scales, another fp8 format, LoRA deltas) is
    brought to float32 and quantised per tensor.
    """
    t = raw.to(device)
    if t.dtype == job.want and not job.patches and (scale is None or scale.numel() == 1):
        s = scale.to(device=device, dtype=torch.float32).reshape(()) if scale is not None else None
        if s is None:
            s = torch.ones((), dtype=torch.float32, device=device)
        w = t.reshape(job.shape)
        return (w.clone() if w.data_ptr() == raw.data_ptr() else w), s
    w = dequantize(t, scale) if (scale is not None or is_fp8(t.dtype)) else t.to(torch.float32)
    for plan, patch in job.patches:
        w += lora_delta(patch, plan.source, job.shape, device)
    q, s = quantize_fp8(w.reshape(job.shape), job.want)
    return q, s


def convert(job: Job, raw: torch.Tensor, scale: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """The final tensor for `job` from its raw file value (which may be clobbered)."""
    t = raw.to(device)
    if scale is not None:
        t = dequantize(t, scale)
    elif is_fp8(t.dtype) and (job.patches or t.dtype != job.want):
        t = t.to(torch.float32)
    if job.patches:
        t = t.to(torch.float32)
        for plan, patch in job.patches:
            t += lora_delta(patch, plan.source, job.shape, device)
    if is_fp8(job.want) and not is_fp8(t.dtype):
        lim = torch.finfo(job.want).max
        t = t.clamp(-lim, lim)
    return t.to(job.want).reshape(job.shape)


def run_jobs(
    jobs: Sequence[Job], device: torch.device, *, read_ahead: bool = True
) -> Iterator[tuple[Job, torch.Tensor | tuple[torch.Tensor, torch.Tensor]]]:
    """Yield (job, final tensor) in order ((weight, scale) for scaled_fp8 jobs); at most two raw tensors in flight."""
    staged = [j.info.nbytes for j in jobs if not j.direct(device)]
    pin = device.type == "cuda" and torch.cuda.is_available()
    n_buf = 2 if read_ahead else 1
    bufs = [torch.empty(max(staged), dtype=torch.uint8, pin_memory=pin) for _ in range(n_buf)] if staged else []

    def fetch(i: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        j = jobs[i]
        buf = None if j.direct(device) else bufs[i % n_buf]
        raw = j.source.read(j.key, buf)
        scale = j.source.read(j.scale_key) if j.scale_key else None
        return raw, scale, buf

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="weights-read") if read_ahead else None
    try:
        pending = pool.submit(fetch, 0) if (pool and jobs) else None
        for i, job in enumerate(jobs):
            if pool:
                raw, scale, buf = pending.result()
                pending = pool.submit(fetch, i + 1) if i + 1 < len(jobs) else None
            else:
                raw, scale, buf = fetch(i)
            if job.scaled_fp8:
                out: torch.Tensor | tuple[torch.Tensor, torch.Tensor] = convert_scaled_fp8(job, raw, scale, device)
            else:
                t = raw if buf is None else convert(job, raw, scale, device)
                if _shares(t, buf):  # never hand out a view of a staging buffer
                    t = t.clone()
                out = t
            del raw
            yield job, out
    finally:
        if pool:
            pool.shutdown(wait=True, cancel_futures=True)
