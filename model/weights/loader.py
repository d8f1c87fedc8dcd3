"""Fill a module built on the meta device from checkpoint files, one tensor at a time.

For each tensor: read its bytes -> move to the target device -> dequantise fp8 (x scale) -> add the LoRA
deltas for that key -> cast -> assign. Nothing is read before every key and shape has been checked against
the module (one WeightLoadError otherwise), and at most two source tensors are in memory at once (the one
being processed and the one being read ahead), so the peak is about one copy of the model.

dtype policy (`dtype=`): the InfiniteTalk reference casts *every* float parameter to its param dtype
(bf16), norms and modulation included (wan/multitalk.py `to_param_dtype_fp32only`), and computes norms and
modulation in fp32 inside the forward. We do the same by default, so bf16 runs round exactly like the
reference. `keep_fp32=("modulation", "norm")` keeps matching parameters in fp32 instead (tiny: ~0.3 MB per
block) for callers who prefer precision over bit-parity. When `dtype` is an fp8 type (weight storage), only
nn.Linear weights are stored as fp8; every other float tensor uses `compute_dtype` (bf16), as fp8 norms,
biases and modulation would be useless.

fp8 linears with their own scale (e.g. `model.dit.fp8_linear.FP8Linear`: an fp8 `<layer>.weight` next to a
float32 `<layer>.weight_scale` in the module) are filled whatever `dtype` says: an fp8 file of the same
format with per-tensor scales (ComfyUI "scaled fp8", `scale_weight` / `weight_scale` keys) goes in byte for
byte with its scale; other files (bf16, plain fp8, per-channel scales, LoRAs merged) are quantised per
tensor on the way in. So a 14B fp8 checkpoint loads straight into fp8 linears, never via a bf16 copy.

`load_module` runs four steps, each a function: plan (`plan.plan_keys`: which file gives each tensor),
check (`plan.check_keys`, then the LoRAs), run (`plan.plan_jobs` orders the reads, `transfer.run_jobs`
makes the tensors, `_run` assigns them), report (`LoadReport`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .checksums import MANIFEST_NAME, verify_files, write_manifest
from .errors import WeightLoadError, format_files
from .lora import LoraPatch, LoraPlan, LoraSpec, open_lora
from .plan import KeyPlan, check_keys, plan_jobs, plan_keys
from .sources import TensorSource, open_source
from .transfer import Job, run_jobs

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadReport:
    """What `load_module` did; `to_dict()` is JSON-ready (for logs and the server's health endpoint)."""

    files: tuple[str, ...]
    layouts: tuple[str, ...]
    loaded: int
    bytes_read: int
    seconds: float
    dtypes: Mapping[str, int] = field(default_factory=dict)
    overridden: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    loras: tuple[str, ...] = ()
    manifest: str = ""

    def to_dict(self) -> dict:
        return {
            "files": list(self.files),
            "layouts": list(self.layouts),
            "loaded": self.loaded,
            "bytes_read": self.bytes_read,
            "seconds": round(self.seconds, 3),
            "dtypes": dict(self.dtypes),
            "overridden": len(self.overridden),
            "ignored": len(self.ignored),
            "missing": list(self.missing),
            "loras": list(self.loras),
            "manifest": self.manifest,
        }


def _assign(module: nn.Module, name: str, value: torch.Tensor) -> torch.Tensor:
    owner_name, _, attr = name.rpartition(".")
    owner = module.get_submodule(owner_name) if owner_name else module
    if attr in owner._parameters:  # keep the flag the module was built with (as load_state_dict(assign=True))
        old = owner._parameters[attr]
        new = value if isinstance(value, nn.Parameter) else nn.Parameter(
            value, requires_grad=old.requires_grad and value.is_floating_point()
        )
        owner._parameters[attr] = new
        return new
    owner._buffers[attr] = value
    return value


def _open_sources(
    sources: Sequence[str | Path | TensorSource] | str | Path | TensorSource, reader: str, opened: list[TensorSource]
) -> list[TensorSource]:
    """The sources as TensorSources; those opened here from paths are added to `opened` (to close)."""
    if isinstance(sources, (str, Path)) or isinstance(sources, TensorSource):
        sources = [sources]
    srcs: list[TensorSource] = []
    for s in sources:
        if isinstance(s, (str, Path)):
            src = open_source(s, reader=reader)
            opened.append(src)
        else:
            src = s
        srcs.append(src)
    return srcs


def _check_manifest(files: Sequence[str], manifest: str | Path | Mapping | bool | None) -> tuple[str, bool]:
    """Verify files against an existing manifest; returns (path, needs_recording)."""
    if manifest is None or manifest is False:
        return "", False
    if isinstance(manifest, Mapping):
        verify_files(files, manifest)
        return "given manifest", False
    path = Path(files[0]).parent / MANIFEST_NAME if manifest is True else Path(manifest)
    if path.is_file():
        verify_files(files, path)
        return str(path), False
    return str(path), True


def _record_manifest(files: Sequence[str], path: str) -> None:
    """Write the checksums of files that just loaded well; a read-only folder only costs a warning."""
    try:
        write_manifest(files, path)
    except OSError as e:
        logger.warning("could not record weight checksums in %s: %s", path, e)


def _open_loras(
    loras: Sequence[LoraSpec | str | Path],
    targets: Mapping[str, torch.Tensor],
    plan: KeyPlan,
    opened: list[LoraPlan],
) -> dict[str, list[tuple[LoraPlan, LoraPatch]]]:
    """The LoRA patches per model tensor; refused when a LoRA changes a tensor no checkpoint provides.

    Opened LoRA files are added to `opened` (to close), one by one, so a failure on the second still
    closes the first.
    """
    shapes = {k: tuple(v.shape) for k, v in targets.items()}
    for spec in loras:
        opened.append(open_lora(spec, shapes))
    patches: dict[str, list[tuple[LoraPlan, LoraPatch]]] = {}
    for lp in opened:
        for tgt, ps in lp.patches.items():
            patches.setdefault(tgt, []).extend((lp, p) for p in ps)
    lora_missing = [k for k in patches if k not in plan.refs]
    if lora_missing:
        raise WeightLoadError(
            f"LoRA changes {', '.join(lora_missing[:3])}, which the checkpoint does not provide",
            files=[lp.spec.path for lp in opened],
            missing=lora_missing,
        )
    return patches


def _run(
    module: nn.Module,
    targets: Mapping[str, torch.Tensor],
    jobs: Sequence[Job],
    tied: Mapping[str, str],
    fp8_pairs: Mapping[str, str],
    device: torch.device,
    read_ahead: bool,
) -> tuple[int, dict[str, int]]:
    """Read, convert and assign every job's tensor, then point tied names at it.

    Returns (bytes read, tensors per final dtype).
    """
    dtype_counts: dict[str, int] = {}
    bytes_read = 0
    loaded: dict[str, torch.Tensor] = {}
    for job, t in run_jobs(jobs, device, read_ahead=read_ahead):
        bytes_read += job.info.nbytes
        if job.scaled_fp8:
            t, scale = t
            scale_name = fp8_pairs[job.name]
            _assign(module, scale_name, scale.reshape(tuple(targets[scale_name].shape)))
        loaded[job.name] = _assign(module, job.name, t)
        dname = str(job.want).replace("torch.", "")
        dtype_counts[dname] = dtype_counts.get(dname, 0) + 1
    for name, first in tied.items():
        _assign(module, name, loaded[first])
    return bytes_read, dtype_counts


def _refuse_tensors_left_on_meta(module: nn.Module, targets: Mapping[str, torch.Tensor]) -> None:
    """Non-persistent buffers built under the meta device can never be filled from a file: say so now,
    not at the first forward."""
    still_meta = [n for n, t in list(module.named_parameters()) + list(module.named_buffers()) if t.is_meta]
    unsaved = [n for n in still_meta if n not in targets]
    if unsaved:
        raise WeightLoadError(
            f"{len(unsaved)} module tensors are not saved in checkpoints (non-persistent buffers) and are still "
            f"on the meta device: {', '.join(unsaved[:5])}. The module must build them itself (in forward, "
            "or after loading), not in __init__ under the meta device.",
            missing=unsaved,
        )


def _report(
    files: Sequence[str],
    plan: KeyPlan,
    loras: Sequence[LoraPlan],
    bytes_read: int,
    dtype_counts: Mapping[str, int],
    seconds: float,
    manifest_path: str,
) -> LoadReport:
    """The LoadReport of a finished load, also logged in one line."""
    report = LoadReport(
        files=tuple(files),
        layouts=tuple(plan.layouts),
        loaded=len(plan.refs),
        bytes_read=bytes_read,
        seconds=seconds,
        dtypes=dict(dtype_counts),
        overridden=tuple(plan.overridden),
        # unexpected keys reach here only without strict (else check_keys raised): they count as ignored
        ignored=tuple(plan.ignored + plan.unexpected),
        missing=tuple(plan.missing),
        loras=tuple(
            f"{lp.name}: {sum(len(v) for v in lp.patches.values())} patches on {len(lp.patches)} tensors, "
            f"strength {lp.spec.strength}"
            for lp in loras
        ),
        manifest=manifest_path,
    )
    logger.info(
        "weights: loaded %d tensors (%.2f GB read) from %s in %.1f s",
        report.loaded, bytes_read / 1e9, format_files(files), report.seconds,
    )
    return report


def load_module(
    module: nn.Module,
    sources: Sequence[str | Path | TensorSource] | str | Path | TensorSource,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    loras: Sequence[LoraSpec | str | Path] = (),
    strict: bool = True,
    ignore: Sequence[str] = (),
    keep_fp32: Sequence[str] = (),
    compute_dtype: torch.dtype = torch.bfloat16,
    manifest: str | Path | Mapping | bool | None = None,
    reader: str = "pread",
    read_ahead: bool = True,
) -> LoadReport:
    """Fill `module` (built under `torch.device("meta")` or anywhere) from checkpoint `sources`.

    sources: files, shard index jsons, folders or opened TensorSources; a later source overrides an earlier
        one key by key (base model first, then e.g. the InfiniteTalk adapter).
    dtype: dtype of float tensors (None: the module's own dtypes). See the module docstring for the policy.
    loras: LoRA files (or LoraSpec with strength) merged into the weights as they load.
    strict: False tolerates keys the model lacks (reported as ignored) and leaves model tensors the files
        lack on the meta device (reported as missing). `ignore`: key prefixes to drop silently (e.g. the
        CLIP checkpoint's "textual.").
    keep_fp32: name parts / norm class names whose tensors stay fp32, e.g. ("modulation", "norm").
    manifest: sha256 check of the files before reading: a dict, a JSON path, or True for
        `<folder of the first file>/weights.sha256.json`; a missing JSON is written after a good load.
    reader: "pread" (own buffers; peak ~ one model copy) or "mmap" (safetensors' safe_open).
    """
    t0 = time.perf_counter()
    device = torch.device(device)
    targets = dict(module.state_dict(keep_vars=True))
    opened: list[TensorSource] = []
    lora_plans: list[LoraPlan] = []
    try:
        # 1. plan: open the files (checking them against the manifest), map their keys onto the module
        srcs = _open_sources(sources, reader, opened)
        files = [p for s in srcs for p in s.paths]
        manifest_path, record = _check_manifest(files, manifest)
        plan = plan_keys(srcs, targets, ignore)
        # 2. check: every key that does not fit, in one error, before any tensor is read; then the LoRAs
        check_keys(plan, files, targets, strict)
        patches = _open_loras(loras, targets, plan, lora_plans)
        jobs, tied = plan_jobs(module, targets, plan, srcs, patches,
                               dtype=dtype, keep_fp32=keep_fp32, compute_dtype=compute_dtype)
        # 3. run: read, convert and assign one tensor at a time
        bytes_read, dtype_counts = _run(module, targets, jobs, tied, plan.fp8_pairs, device, read_ahead)
        if record:
            _record_manifest(files, manifest_path)
        _refuse_tensors_left_on_meta(module, targets)
        # 4. report
        return _report(files, plan, lora_plans, bytes_read, dtype_counts, time.perf_counter() - t0, manifest_path)
    finally:
        for lp in lora_plans:
            lp.close()
        for s in opened:
            s.close()
