"""Before any tensor is read: where each model tensor comes from, whether the files fit, and in what dtype.

`plan_keys` maps every source's keys onto the module's reference names (layouts, fp8 scales, later
sources overriding earlier ones, keys to drop); `check_keys` turns every key that does not fit into ONE
WeightLoadError; `plan_jobs` gives each tensor its dtype (the policy in `loader`'s docstring) and puts
the reads in file order. `loader.load_module` runs these, then the jobs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from model.fp8 import is_fp8

from .errors import explain_key_mismatch, format_files, key_mismatch_error
from .fp8 import plan_quantization, refuse_unsupported
from .layouts import Layout, detect_layout
from .lora import LoraPatch, LoraPlan
from .sources import TensorInfo, TensorSource
from .transfer import Job

logger = logging.getLogger(__name__)

SCALE_SUFFIX = ".weight_scale"

Patches = Mapping[str, Sequence[tuple[LoraPlan, LoraPatch]]]  # model tensor -> the LoRA patches on it


@dataclass(frozen=True)
class Ref:
    """Where the value of one model tensor comes from."""

    source: int  # index into the sources list
    key: str  # the source's own key
    info: TensorInfo
    scale_key: str | None = None


@dataclass(frozen=True)
class KeyPlan:
    """Every model tensor's source, and every key that does not fit (what `check_keys` judges)."""

    refs: dict[str, Ref]  # model name -> its source; scales of fp8 pairs come with their weights instead
    layouts: list[str]  # one line per source: layout, tensor count, quantization scheme
    overridden: list[str]  # names a later source took over from an earlier one
    ignored: list[str]  # dropped on purpose: other models' tensors in the same file, `ignore=` prefixes
    unexpected: list[str]  # keys the module lacks
    missing: list[str]  # module tensors no source provides
    mismatched: list[str]  # "name: checkpoint [..] vs model [..]"
    fp8_pairs: dict[str, str]  # fp8 weight -> its scale's name, both produced by one job


def _ignored(key: str, prefixes: Iterable[str]) -> bool:
    return any(key.startswith(p) for p in prefixes)


def _map_sources(
    sources: Sequence[TensorSource], targets: Mapping[str, torch.Tensor]
) -> tuple[dict[str, Ref], list[str], list[str], list[str], list[str]]:
    """Reference key -> Ref over all sources (later sources override earlier ones).

    Also returns the unexpected keys, the overridden ones, and the "foreign" ones: in a file whose model
    keys carry a prefix (ComfyUI's `model.diffusion_model.`), unused keys without it belong to the other
    models of an all-in-one checkpoint (`first_stage_model.` VAE, text encoders) and are skipped.
    """
    plan: dict[str, Ref] = {}
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
            plan[rk] = Ref(i, k, infos[rk], back[scale] if scale else None)
    return plan, layouts, unexpected, overridden, foreign


def _scaled_fp8_pairs(targets: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """fp8 weight name -> its scale's name, for modules that keep fp8 weights with a per-tensor scale."""
    pairs = {}
    for name in targets:
        if name.endswith(SCALE_SUFFIX):
            weight = name[: -len(SCALE_SUFFIX)] + ".weight"
            if weight in targets and is_fp8(targets[weight].dtype):
                pairs[weight] = name
    return pairs


def plan_keys(
    sources: Sequence[TensorSource], targets: Mapping[str, torch.Tensor], ignore: Sequence[str] = ()
) -> KeyPlan:
    """Map every source's keys onto the module's tensors (`targets`: its state dict) and sort out the rest."""
    refs, layouts, unexpected, overridden, foreign = _map_sources(sources, targets)
    for lay in layouts:
        logger.info("weights: %s", lay)
    if foreign:
        logger.info("weights: skipping %d tensors of other models in the same file (e.g. %s)",
                    len(foreign), ", ".join(foreign[:3]))
    fp8_pairs = {w: sc for w, sc in _scaled_fp8_pairs(targets).items() if w in refs}
    filled_scales = set(fp8_pairs.values())  # produced with their weights, not read by name
    for sc in filled_scales:
        refs.pop(sc, None)
    return KeyPlan(
        refs=refs,
        layouts=layouts,
        overridden=overridden,
        ignored=foreign + [k for k in unexpected if _ignored(k, ignore)],
        unexpected=[k for k in unexpected if not _ignored(k, ignore)],
        missing=[k for k in targets if k not in refs and k not in filled_scales],
        mismatched=[
            f"{k}: checkpoint {list(r.info.shape)} vs model {list(targets[k].shape)}"
            for k, r in refs.items()
            if r.info.shape != tuple(targets[k].shape)
        ],
        fp8_pairs=fp8_pairs,
    )


def check_keys(plan: KeyPlan, files: Sequence[str], targets: Mapping[str, torch.Tensor], strict: bool) -> None:
    """Raise one WeightLoadError for wrong shapes and (strict) for missing or unexpected keys, with a hint
    at what the files are; without strict, missing tensors only get a warning (they stay on meta)."""
    if plan.mismatched or (strict and (plan.missing or plan.unexpected)):
        hint = explain_key_mismatch(
            plan.missing, plan.unexpected, [m.split(":")[0] for m in plan.mismatched],
            plan.refs.keys() | set(plan.unexpected), targets,
        )
        raise key_mismatch_error(
            files, plan.missing if strict else [], plan.unexpected if strict else [], plan.mismatched, hint
        )
    if not strict and plan.missing:
        logger.warning("weights: %d model tensors not in %s, left on meta: %s", len(plan.missing),
                       format_files(files), ", ".join(plan.missing[:5]))


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


def _linear_weights(module: nn.Module) -> set[str]:
    return {f"{n}.weight" if n else "weight" for n, m in module.named_modules() if isinstance(m, nn.Linear)}


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


def plan_jobs(
    module: nn.Module,
    targets: Mapping[str, torch.Tensor],
    plan: KeyPlan,
    sources: Sequence[TensorSource],
    patches: Patches,
    *,
    dtype: torch.dtype | None,
    keep_fp32: Sequence[str],
    compute_dtype: torch.dtype,
) -> tuple[list[Job], dict[str, str]]:
    """One Job per tensor to read, in file order (sequential reads), with the dtype it ends in.

    A tensor the module holds under several names (tied weights) is read once: the second result maps
    each other name to the name whose job loads it.
    """
    refs = plan.refs
    linear = _linear_weights(module) if dtype is not None and is_fp8(dtype) else set()
    fp32_names = _kept_fp32(module, refs, keep_fp32)
    first_name: dict[int, str] = {}
    for name in refs:
        first_name.setdefault(id(targets[name]), name)
    order = sorted(
        (n for n in refs if first_name[id(targets[n])] == n),
        key=lambda n: (refs[n].source, refs[n].info.path, getattr(sources[refs[n].source], "offset", lambda k: 0)(refs[n].key)),
    )
    jobs = [
        Job(
            name=n,
            source=sources[refs[n].source],
            key=refs[n].key,
            info=refs[n].info,
            want=targets[n].dtype if n in plan.fp8_pairs else _target_dtype(
                targets[n], n in linear, n in fp32_names, dtype, compute_dtype),
            shape=tuple(targets[n].shape),
            scale_key=refs[n].scale_key,
            patches=tuple(patches.get(n, ())),
            scaled_fp8=n in plan.fp8_pairs,
        )
        for n in order
    ]
    tied = {n: first_name[id(targets[n])] for n in refs if first_name[id(targets[n])] != n}
    return jobs, tied
