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
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .checksums import MANIFEST_NAME, verify_files, write_manifest
from .errors import WeightLoadError, explain_key_mismatch, format_files, key_mismatch_error
from .fp8 import is_fp8, plan_quantization, refuse_unsupported
from .layouts import Layout, detect_layout
from .lora import LoraPatch, LoraPlan, LoraSpec, open_lora
from .sources import TensorInfo, TensorSource, open_source
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


@dataclass(frozen=True)
class _Ref:
    """Where the value of one model tensor comes from."""

    source: int  # index into the sources list
    key: str  # the source's own key
    info: TensorInfo
    scale_key: str | None = None


def _ignored(key: str, prefixes: Iterable[str]) -> bool:
    return any(key.startswith(p) for p in prefixes)


def _kept_fp32(module: nn.Module, names: Iterable[str], patterns: Sequence[str]) -> set[str]:
    """Names whose dotted parts start with a pattern ("norm" -> norm3, norm_q) or whose owning module's
    class name contains it ("norm" -> LayerNorm, RMSNorm)."""
    if not patterns:
        return set()
    pats = [p.lower() for p in patterns]
    kept = set()
    for name in names:
        owner_name, _, _ = name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        cls = type(owner).__name__.lower()
        parts = name.lower().split(".")
        if any(cls.find(p) >= 0 or any(part.startswith(p) for part in parts) for p in pats):
            kept.add(name)
    return kept


def _map_sources(
    sources: Sequence[TensorSource], targets: Mapping[str, torch.Tensor]
) -> tuple[dict[str, _Ref], list[str], list[str], list[str], list[str]]:
    """Reference key -> _Ref over all sources (later sources override earlier ones).

    Also returns the unexpected keys, the overridden ones, and the "foreign" ones: in a file whose model
    keys carry a prefix (ComfyUI's `model.diffusion_model.`), unused keys without it belong to the other
    models of an all-in-one checkpoint (`first_stage_model.` VAE, text encoders) and are skipped.
    """
    plan: dict[str, _Ref] = {}
    layouts: list[str] = []
    unexpected: list[str] = []
    overridden: list[str] = []
    foreign: list[str] = []
    for i, src in enumerate(sources):
        keys = src.keys()
        refuse_unsupported(keys, src.name)
        layout: Layout = detect_layout(keys, targets, file=src.name)
        ref_of = {k: layout.to_reference(k) for k in keys}
        infos = {ref_of[k]: src.info(k) for k in keys}
        back = {v: k for k, v in ref_of.items()}
        quant = plan_quantization(infos, lambda rk, s=src, b=back: s.read(b[rk]), src.metadata, file=src.name)
        layouts.append(f"{src.name}: {layout.describe()}, {len(keys)} tensors, quantization {quant.scheme}")
        for k in keys:
            rk = ref_of[k]
            if rk in quant.aux:
                continue
            if rk not in targets:
                (foreign if layout.prefix and not k.startswith(layout.prefix) else unexpected).append(rk)
                continue
            if rk in plan:
                overridden.append(rk)
            scale = quant.scales.get(rk)
            plan[rk] = _Ref(i, k, infos[rk], back[scale] if scale else None)
    return plan, layouts, unexpected, overridden, foreign


def _target_dtype(
    meta: torch.Tensor,
    is_linear_weight: bool,
    keep_fp32: bool,
    dtype: torch.dtype | None,
    compute_dtype: torch.dtype,
) -> torch.dtype:
    if not meta.is_floating_point():
        return meta.dtype
    if keep_fp32:
        return torch.float32
    if dtype is None:
        return meta.dtype
    if is_fp8(dtype) and not is_linear_weight:
        return compute_dtype
    return dtype


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


SCALE_SUFFIX = ".weight_scale"


def _scaled_fp8_pairs(targets: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """fp8 weight name -> its scale's name, for modules that keep fp8 weights with a per-tensor scale."""
    pairs = {}
    for name in targets:
        if name.endswith(SCALE_SUFFIX):
            weight = name[: -len(SCALE_SUFFIX)] + ".weight"
            if weight in targets and is_fp8(targets[weight].dtype):
                pairs[weight] = name
    return pairs


def _linear_weights(module: nn.Module) -> set[str]:
    return {f"{n}.weight" if n else "weight" for n, m in module.named_modules() if isinstance(m, nn.Linear)}


def _check_manifest(files: Sequence[str], manifest: str | Path | Mapping | bool) -> tuple[str, bool]:
    """Verify files against an existing manifest; returns (path, needs_recording)."""
    if isinstance(manifest, Mapping):
        verify_files(files, manifest)
        return "given manifest", False
    path = Path(files[0]).parent / MANIFEST_NAME if manifest is True else Path(manifest)
    if path.is_file():
        verify_files(files, path)
        return str(path), False
    return str(path), True


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
    if isinstance(sources, (str, Path)) or isinstance(sources, TensorSource):
        sources = [sources]
    targets = dict(module.state_dict(keep_vars=True))
    shapes = {k: tuple(v.shape) for k, v in targets.items()}
    opened: list[TensorSource] = []
    srcs: list[TensorSource] = []
    plans: list[LoraPlan] = []
    try:
        for s in sources:
            if isinstance(s, (str, Path)):
                src = open_source(s, reader=reader)
                opened.append(src)
            else:
                src = s
            srcs.append(src)
        files = [p for s in srcs for p in s.paths]
        manifest_path, record = ("", False)
        if manifest is not None and manifest is not False:
            manifest_path, record = _check_manifest(files, manifest)

        plan, layouts, unexpected, overridden, foreign = _map_sources(srcs, targets)
        for lay in layouts:
            logger.info("weights: %s", lay)
        if foreign:
            logger.info("weights: skipping %d tensors of other models in the same file (e.g. %s)",
                        len(foreign), ", ".join(foreign[:3]))
        ignored = foreign + [k for k in unexpected if _ignored(k, ignore)]
        unexpected = [k for k in unexpected if not _ignored(k, ignore)]
        fp8_pairs = {w: sc for w, sc in _scaled_fp8_pairs(targets).items() if w in plan}
        filled_scales = set(fp8_pairs.values())  # produced with their weights, not read by name
        for sc in filled_scales:
            plan.pop(sc, None)
        missing = [k for k in targets if k not in plan and k not in filled_scales]
        mismatched = [
            f"{k}: checkpoint {list(r.info.shape)} vs model {list(shapes[k])}"
            for k, r in plan.items()
            if r.info.shape != shapes[k]
        ]
        if mismatched or (strict and (missing or unexpected)):
            hint = explain_key_mismatch(
                missing, unexpected, [m.split(":")[0] for m in mismatched], plan.keys() | set(unexpected), targets
            )
            raise key_mismatch_error(files, missing if strict else [], unexpected if strict else [], mismatched, hint)
        if not strict:
            ignored += unexpected
            if missing:
                logger.warning("weights: %d model tensors not in %s, left on meta: %s", len(missing),
                               format_files(files), ", ".join(missing[:5]))

        for spec in loras:
            plans.append(open_lora(spec, shapes))
        patches: dict[str, list[tuple[LoraPlan, LoraPatch]]] = {}
        for lp in plans:
            for tgt, ps in lp.patches.items():
                patches.setdefault(tgt, []).extend((lp, p) for p in ps)
        lora_missing = [k for k in patches if k not in plan]
        if lora_missing:
            raise WeightLoadError(
                f"LoRA changes {', '.join(lora_missing[:3])}, which the checkpoint does not provide",
                files=[lp.spec.path for lp in plans],
                missing=lora_missing,
            )

        linear = _linear_weights(module) if dtype is not None and is_fp8(dtype) else set()
        fp32_names = _kept_fp32(module, plan, keep_fp32)
        # same tensor object under several names (tied weights) is read once
        first_name: dict[int, str] = {}
        for name in plan:
            first_name.setdefault(id(targets[name]), name)
        order = sorted(
            (n for n in plan if first_name[id(targets[n])] == n),
            key=lambda n: (plan[n].source, plan[n].info.path, getattr(srcs[plan[n].source], "offset", lambda k: 0)(plan[n].key)),
        )

        jobs = [
            Job(
                name=n,
                source=srcs[plan[n].source],
                key=plan[n].key,
                info=plan[n].info,
                want=targets[n].dtype if n in fp8_pairs else _target_dtype(
                    targets[n], n in linear, n in fp32_names, dtype, compute_dtype),
                shape=shapes[n],
                scale_key=plan[n].scale_key,
                patches=tuple(patches.get(n, ())),
                scaled_fp8=n in fp8_pairs,
            )
            for n in order
        ]
        dtype_counts: dict[str, int] = {}
        bytes_read = 0
        assigned: dict[int, torch.Tensor] = {}
        for job, t in run_jobs(jobs, device, read_ahead=read_ahead):
            bytes_read += job.info.nbytes
            if job.scaled_fp8:
                t, scale = t
                _assign(module, fp8_pairs[job.name], scale.reshape(shapes[fp8_pairs[job.name]]))
            assigned[id(targets[job.name])] = _assign(module, job.name, t)
            dname = str(job.want).replace("torch.", "")
            dtype_counts[dname] = dtype_counts.get(dname, 0) + 1
        for name in plan:  # tied names: point at the tensor loaded for the first name
            if first_name[id(targets[name])] != name:
                _assign(module, name, assigned[id(targets[name])])

        if record:
            try:
                write_manifest(files, manifest_path)
            except OSError as e:
                logger.warning("could not record weight checksums in %s: %s", manifest_path, e)

        still_meta = [n for n, t in list(module.named_parameters()) + list(module.named_buffers()) if t.is_meta]
        unsaved = [n for n in still_meta if n not in targets]
        if unsaved:
            raise WeightLoadError(
                f"{len(unsaved)} module tensors are not saved in checkpoints (non-persistent buffers) and are still "
                f"on the meta device: {', '.join(unsaved[:5])}. The module must build them itself (in forward, "
                "or after loading), not in __init__ under the meta device.",
                missing=unsaved,
            )

        report = LoadReport(
            files=tuple(files),
            layouts=tuple(layouts),
            loaded=len(plan),
            bytes_read=bytes_read,
            seconds=time.perf_counter() - t0,
            dtypes=dtype_counts,
            overridden=tuple(overridden),
            ignored=tuple(ignored),
            missing=tuple(missing),
            loras=tuple(
                f"{lp.name}: {sum(len(v) for v in lp.patches.values())} patches on {len(lp.patches)} tensors, "
                f"strength {lp.spec.strength}"
                for lp in plans
            ),
            manifest=manifest_path,
        )
        logger.info(
            "weights: loaded %d tensors (%.2f GB read) from %s in %.1f s",
            report.loaded, bytes_read / 1e9, format_files(files), report.seconds,
        )
        return report
    finally:
        for lp in plans:
            lp.close()
        for s in opened:
            s.close()
