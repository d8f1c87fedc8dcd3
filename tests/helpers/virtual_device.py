"""A second device on a CPU-only machine, strict like CUDA, for catching device bugs without a GPU.

Inside `virtual_device()`, `x.to(DEVICE)`, `module.to(DEVICE)` and factories called with
`device=DEVICE` give `Virtual` tensors: wrappers that report device `meta` but hold a real CPU
tensor and compute real values (ops run on the inner tensors). Every op on them is checked the way
a CUDA kernel checks its inputs:

- a non-scalar tensor of another device in the same op is an error (`DeviceMismatch`), as on CUDA
  (0-dim CPU tensors are allowed, as CUDA allows CPU scalars; copies and CPU index tensors too);
- `.numpy()` of a device tensor fails, as it does for a CUDA tensor;
- every host sync is recorded in the audit: scalar reads (`.item()`, `float(t)`, `bool(t)`),
  ops whose output size depends on values (`nonzero`, boolean masks, `unique`, `equal`), and
  copies to the host (`.cpu()`, `.to("cpu")`, `cpu_tensor.copy_(device_tensor)`), each with the
  project source line that made it.

So a model path that runs here without `DeviceMismatch` has every tensor on the right device, and
the audit says how many times per window it would make a GPU wait for the host.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

DEVICE = torch.device("meta")
aten = torch.ops.aten
_REPO = str(Path(__file__).resolve().parents[2])

# Ops that read values on the host (CUDA: the host waits for the device).
_SCALAR_READS = {aten._local_scalar_dense.default, aten.equal.default, aten.is_nonzero.default}
_VALUE_SHAPED = {
    aten.nonzero.default, aten.masked_select.default, aten._unique2.default, aten.unique_dim.default,
    aten.unique_consecutive.default, aten.argwhere.default, aten.repeat_interleave.Tensor,
}
# Ops whose arguments may legitimately live on different devices (as on CUDA).
_CROSS_DEVICE_OK = {aten.copy_.default, aten._to_copy.default, aten.index.Tensor, aten.index_put_.default,
                    aten.index_put.default, aten._index_put_impl_.default}


class DeviceMismatch(RuntimeError):
    """An op got tensors on two devices: on a GPU this is the crash the audit exists to find."""


@dataclass
class Sync:
    kind: str  # "scalar" | "value_shaped" | "to_host"
    op: str
    where: str  # the innermost project source line (not tests/) that issued it


@dataclass
class Audit:
    """What ran on the virtual device: host syncs in order, and the ops seen."""

    syncs: list[Sync] = field(default_factory=list)
    ops: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, kind: str | None = None) -> int:
        return sum(1 for s in self.syncs if kind is None or s.kind == kind)

    def clear(self) -> None:
        with self.lock:
            self.syncs.clear()
            self.ops = 0

    def record(self, kind: str, op: str) -> None:
        with self.lock:
            self.syncs.append(Sync(kind, op, _caller()))


_ACTIVE: list[Audit] = []


def _caller() -> str:
    """The innermost frame of the project's own code (not tests/), else the innermost outside torch."""
    frames = [fr for fr in traceback.extract_stack() if "/torch/" not in fr.filename and fr.filename != __file__]
    for fr in reversed(frames):
        if fr.filename.startswith(_REPO) and "/tests/" not in fr.filename and ".venv" not in fr.filename:
            return f"{Path(fr.filename).relative_to(_REPO)}:{fr.lineno}"
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"


class Virtual(torch.Tensor):
    """A tensor on the virtual device: metadata of a `meta` tensor, values in `inner` (CPU)."""

    inner: torch.Tensor

    @staticmethod
    def __new__(cls, inner: torch.Tensor) -> Virtual:
        out = torch.Tensor._make_wrapper_subclass(
            cls, inner.size(), strides=inner.stride(), storage_offset=inner.storage_offset(),
            dtype=inner.dtype, layout=inner.layout, device=DEVICE, requires_grad=inner.requires_grad,
        )
        out.inner = inner
        return out

    def __repr__(self) -> str:  # noqa: D105
        return f"Virtual({self.inner!r})"

    def numpy(self, *args, **kwargs):  # noqa: ANN201 - as torch.Tensor.numpy
        raise TypeError("can't convert a device tensor to numpy: copy it to the host first (.cpu()), "
                        "as a CUDA tensor needs")

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206
        kwargs = kwargs or {}
        audit = _ACTIVE[-1] if _ACTIVE else None
        flat, _ = tree_flatten((args, kwargs))
        tensors = [t for t in flat if isinstance(t, torch.Tensor)]
        if func not in _CROSS_DEVICE_OK:
            for t in tensors:
                if not isinstance(t, Virtual) and not (t.device.type == "cpu" and t.dim() == 0):
                    raise DeviceMismatch(
                        f"{func} got a {t.device.type} tensor of shape {list(t.shape)} beside {DEVICE.type} "
                        f"tensors (at {_caller()}): on a GPU this raises 'Expected all tensors to be on the "
                        "same device'")
        if audit is not None:
            audit.ops += 1
            if func in _SCALAR_READS:
                audit.record("scalar", str(func))
            elif func in _VALUE_SHAPED or (func is aten.index.Tensor and _bool_index(args)):
                audit.record("value_shaped", str(func))
        to_host = func is aten._to_copy.default and torch.device(kwargs.get("device") or DEVICE).type != DEVICE.type
        if to_host or (func is aten.copy_.default and not isinstance(args[0], Virtual)):
            if audit is not None:
                audit.record("to_host", str(func))
        inner_kwargs = tree_map(_unwrap, kwargs)
        if _is_virtual_device(inner_kwargs.get("device")):
            inner_kwargs["device"] = torch.device("cpu")  # the values live on the CPU
        out = func(*tree_map(_unwrap, args), **inner_kwargs)
        if to_host:
            return out
        # An op that returns one of its arguments (in-place, out=) returns that argument itself.
        same = {id(t.inner): t for t in tensors if isinstance(t, Virtual)}
        same.update({id(t): t for t in tensors if not isinstance(t, Virtual)})
        return tree_map(lambda x: same[id(x)] if isinstance(x, torch.Tensor) and id(x) in same else _wrap(x), out)


def _bool_index(args: tuple) -> bool:
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else ()))


def _unwrap(x):  # noqa: ANN001, ANN202
    return x.inner if isinstance(x, Virtual) else x


def _wrap(x):  # noqa: ANN001, ANN202
    return Virtual(x) if isinstance(x, torch.Tensor) and not isinstance(x, Virtual) else x


def _is_virtual_device(device: object) -> bool:
    return device is not None and torch.device(device).type == DEVICE.type  # type: ignore[arg-type]


class _Factories(TorchDispatchMode):
    """Makes `device=DEVICE` factories and `.to(DEVICE)` produce Virtual tensors (CPU values)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206
        kwargs = kwargs or {}
        if _is_virtual_device(kwargs.get("device")):
            flat, _ = tree_flatten(args)
            src = next((t for t in flat if isinstance(t, torch.Tensor)), None)
            if func is aten._to_copy.default and isinstance(src, Virtual):
                return func(*args, **kwargs)  # device to device: the Virtual handler copies
            out = func(*args, **{**kwargs, "device": torch.device("cpu")})
            return tree_map(_wrap, out)
        return func(*args, **kwargs)


def _from_data(make):  # noqa: ANN001, ANN202
    """torch.tensor / torch.as_tensor build device tensors below the dispatcher's reach: build on the
    CPU, then copy to the virtual device through the dispatcher."""

    def build(data, *args, device=None, **kwargs):  # noqa: ANN001, ANN202
        if _is_virtual_device(device):
            return make(data, *args, **kwargs).to(DEVICE)
        return make(data, *args, device=device, **kwargs)

    return build


@contextmanager
def virtual_device() -> Iterator[Audit]:
    """Enable the virtual device in this thread and in threads started meanwhile (the engine's worker);
    yields the audit of everything it runs."""
    audit = Audit()
    _ACTIVE.append(audit)
    saved = torch.tensor, torch.as_tensor, threading.Thread.run
    torch.tensor, torch.as_tensor = _from_data(torch.tensor), _from_data(torch.as_tensor)

    def run(thread: threading.Thread) -> None:
        with _Factories():
            saved[2](thread)

    threading.Thread.run = run  # type: ignore[method-assign]
    try:
        with _Factories():
            yield audit
    finally:
        torch.tensor, torch.as_tensor, threading.Thread.run = saved  # type: ignore[method-assign]
        _ACTIVE.remove(audit)


def to_host(x: torch.Tensor) -> torch.Tensor:
    """A Virtual tensor's values as a plain CPU tensor, without recording a sync (for test assertions)."""
    return x.inner if isinstance(x, Virtual) else x


def pipeline_on_device(pipe):  # noqa: ANN001, ANN201 - an InfiniteTalkPipeline
    """Move a loaded pipeline's networks and text to the virtual device, as `load_bundle(device=...)` would."""
    from model.infinitetalk import InfiniteTalkPipeline, TextConditioning

    moved = InfiniteTalkPipeline(pipe.dit.to(DEVICE), pipe.vae.to(DEVICE), pipe.clip.to(DEVICE),
                                 TextConditioning(pipe.text.prompt, pipe.text.negative), device=DEVICE)
    moved.times = pipe.times
    return moved


def shown_chunks(frame_num: int, motion_frames: int, temporal_stride: int = 4) -> int:
    """Decoded chunks (1 frame, then `temporal_stride` per latent frame) holding new frames of a window:
    each is handed to the host once."""
    ends = range(1, frame_num + 1, temporal_stride)
    return sum(1 for end in ends if end > motion_frames)


def bundle_on_device(bundle):  # noqa: ANN001, ANN201 - an InfiniteTalkBundle
    """A loaded bundle with its pipeline and wav2vec2 on the virtual device (the speech features run there too)."""
    import dataclasses

    return dataclasses.replace(bundle, pipe=pipeline_on_device(bundle.pipe), wav2vec2=bundle.wav2vec2.to(DEVICE))


def collective_on_values(collective):  # noqa: ANN001, ANN201
    """A torch.distributed collective that takes Virtual tensors: gloo moves their CPU values in place.

    The collective itself is the edge (on GPUs NCCL reads device memory); everything around it still
    runs on the virtual device.
    """

    def run(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        return collective(*tree_map(_unwrap, args), **tree_map(_unwrap, kwargs))

    return run
