"""LoRA files -> per-weight deltas, merged into the weights at load time with a user strength.

Facts (ComfyUI comfy/lora.py + comfy/weight_adapter/lora.py, ComfyUI-WanVideoWrapper
nodes_model_loading.py `standardize_lora_key_format` + custom_linear.py, InfiniteTalk wan/wan_lora.py):
- pair names: `<m>.lora_up.weight`/`lora_down` (kohya, e.g. the lightx2v step-distill LoRA), PEFT
  `<m>.lora_B.weight`/`lora_A` (also `.lora_B.default.weight`), diffusers `<m>_lora.up.weight`,
  `<m>.lora.up.weight`, `<m>.lora_linear_layer.up.weight`; optional `<m>.alpha`.
- full deltas: `<m>.diff` (weight), `<m>.diff_b` (bias), and the wrapper's `<block>.diff_m` (modulation).
- module names: reference names under `diffusion_model.` / `model.diffusion_model.`, diffusers names under
  `transformer.`, PEFT `base_model.model.`, or kohya `lora_unet_` + the name with dots as underscores.
- delta = strength * (alpha / rank if alpha else 1) * (up.flatten(1) @ down.flatten(1)).reshape(W.shape), with
  rank = down.shape[0] (ComfyUI and the wrapper). The InfiniteTalk reference script ignores alpha
  (delta = strength * up @ down); `LoraSpec(use_alpha=False)` reproduces that.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from math import prod
from pathlib import Path

import torch

from .errors import WeightLoadError
from .layouts import apply_aliases, diffusers_key_to_wan
from .sources import TensorSource, open_source

logger = logging.getLogger(__name__)

# (role, suffix); checked in order, first match wins.
_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("up", ".lora_up.weight"),
    ("down", ".lora_down.weight"),
    ("up", ".lora_B.default.weight"),
    ("down", ".lora_A.default.weight"),
    ("up", ".lora_B.weight"),
    ("down", ".lora_A.weight"),
    ("up", "_lora.up.weight"),
    ("down", "_lora.down.weight"),
    ("up", ".lora.up.weight"),
    ("down", ".lora.down.weight"),
    ("up", ".lora_linear_layer.up.weight"),
    ("down", ".lora_linear_layer.down.weight"),
    ("up", ".lora_B"),
    ("down", ".lora_A"),
    ("alpha", ".alpha"),
    ("diff_b", ".diff_b"),
    ("diff_m", ".diff_m"),
    ("diff", ".diff"),
)
_UNSUPPORTED = (".lora_mid.weight", ".dora_scale", ".hada_w1_a", ".lokr_w1", ".lokr_w2", ".a1.weight")
_DOTTED_PREFIXES = (
    "model.diffusion_model.",
    "diffusion_model.",
    "base_model.model.",
    "transformer.",
    "pipe.dit.",
    "unet.",
)
_UNDERSCORE_PREFIXES = ("lora_unet__", "lora_unet_", "lycoris_", "lora_transformer_")


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA file to merge. `strict`: refuse a file with keys that match no weight of the model."""

    path: str | Path
    strength: float = 1.0
    use_alpha: bool = True
    strict: bool = True


@dataclass(frozen=True)
class LoraPatch:
    """One additive change to one model tensor."""

    target: str
    kind: str  # "lora" (up @ down) | "diff" (full delta)
    keys: tuple[str, ...]  # (up, down) or (diff,)
    scale: float


@dataclass
class LoraPlan:
    """What one LoRA file does to the model: patches per target key (nothing read yet but alphas)."""

    spec: LoraSpec
    source: TensorSource
    patches: dict[str, list[LoraPatch]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return Path(str(self.spec.path)).name

    def close(self) -> None:
        self.source.close()


def split_lora_key(key: str) -> tuple[str, str] | None:
    """`diffusion_model.blocks.0.self_attn.q.lora_down.weight` -> ("diffusion_model.blocks.0.self_attn.q", "down")."""
    for role, suffix in _SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)], role
    return None


def _module_index(targets: Mapping[str, tuple[int, ...]]) -> tuple[set[str], dict[str, str]]:
    modules = {k[: -len(".weight")] for k in targets if k.endswith(".weight")}
    under = {m.replace(".", "_"): m for m in modules}
    for k in targets:  # parameters that are not `<module>.weight` (e.g. blocks.0.modulation)
        under.setdefault(k.replace(".", "_"), k)
    return modules, under


def resolve_module(path: str, modules: set[str], params: set[str], underscore: Mapping[str, str]) -> str | None:
    """A LoRA module path in any known naming -> the model's module (or parameter) name, or None."""
    for p in _UNDERSCORE_PREFIXES:
        if path.startswith(p):
            return underscore.get(path[len(p) :])
    for p in _DOTTED_PREFIXES:
        if path.startswith(p):
            path = path[len(p) :]
            break
    path = apply_aliases(path)
    if path in modules or path in params:
        return path
    conv = diffusers_key_to_wan(path + ".weight")[: -len(".weight")]
    if conv in modules:
        return conv
    return None


def _group_keys(
    source: TensorSource, targets: Mapping[str, tuple[int, ...]]
) -> tuple[dict[str, dict[str, str]], list[str]]:
    """The file's keys grouped by the model tensor they patch ({target: {role: key}}), and those that match none."""
    file = source.name
    modules, underscore = _module_index(targets)
    params = set(targets)
    groups: dict[str, dict[str, str]] = {}
    unmatched: list[str] = []
    for key in source.keys():
        if key.endswith(_UNSUPPORTED) or ".hada_" in key or ".lokr_" in key:
            raise WeightLoadError(
                f"LoRA {file}: {key} belongs to a LoRA variant this loader does not merge (LoCon mid, DoRA, LoHa, "
                "LoKr); convert it to a plain lora_up/lora_down LoRA first",
                files=[file],
            )
        split = split_lora_key(key)
        if split is None:
            unmatched.append(key)
            continue
        path, role = split
        if role == "diff_m":  # the wrapper's name for a block's modulation delta
            path, role = path + ".modulation", "diff"
        target_mod = resolve_module(path, modules, params, underscore)
        if target_mod is None:
            unmatched.append(key)
            continue
        groups.setdefault(target_mod, {})[role] = key
    return groups, unmatched


def _low_rank_patch(
    source: TensorSource, spec: LoraSpec, weight: str, want: tuple[int, ...], roles: dict[str, str]
) -> LoraPatch:
    """up @ down for one weight, its shapes checked against the weight's, scaled by strength (x alpha / rank)."""
    file = source.name
    if "up" not in roles or "down" not in roles:
        raise WeightLoadError(
            f"LoRA {file}: {weight} has only {'lora_up' if 'up' in roles else 'lora_down'}; the file is incomplete",
            files=[file],
        )
    up, down = source.info(roles["up"]), source.info(roles["down"])
    rank = down.shape[0]
    if prod(up.shape[1:]) != rank or up.shape[0] != want[0] or up.shape[0] * prod(down.shape[1:]) != prod(want):
        raise WeightLoadError(
            f"LoRA {file}: {roles['up']} {list(up.shape)} x {roles['down']} {list(down.shape)} does not "
            f"fit {weight} {list(want)}; is this a LoRA for another model size?",
            files=[file],
            mismatched=[weight],
        )
    scale = spec.strength
    if "alpha" in roles and spec.use_alpha:
        alpha = float(source.read(roles["alpha"]).float().reshape(-1)[0])
        scale *= alpha / rank
    return LoraPatch(weight, "lora", (roles["up"], roles["down"]), scale)


def plan_lora(source: TensorSource, targets: Mapping[str, tuple[int, ...]], spec: LoraSpec) -> LoraPlan:
    """Match a LoRA file's keys to the model's tensors and check every shape (reads only the alphas)."""
    file = source.name
    groups, unmatched = _group_keys(source, targets)
    modules, _ = _module_index(targets)
    plan = LoraPlan(spec, source)
    n_keys = len(source.keys())
    for mod, roles in groups.items():
        weight = mod + ".weight" if mod in modules else mod
        if "up" in roles or "down" in roles:
            plan.patches.setdefault(weight, []).append(_low_rank_patch(source, spec, weight, targets[weight], roles))
        for role, tgt in (("diff", weight), ("diff_b", mod + ".bias")):
            if role not in roles:
                continue
            if tgt not in targets:
                unmatched.append(roles[role])
                continue
            d = source.info(roles[role])
            if prod(targets[tgt]) != prod(d.shape):
                raise WeightLoadError(
                    f"LoRA {file}: {roles[role]} {list(d.shape)} does not fit {tgt} {list(targets[tgt])}",
                    files=[file],
                    mismatched=[tgt],
                )
            plan.patches.setdefault(tgt, []).append(LoraPatch(tgt, "diff", (roles[role],), spec.strength))
        if set(roles) == {"alpha"}:
            unmatched.append(roles["alpha"])
    _refuse_or_warn_unmatched(plan, unmatched, n_keys)
    return plan


def _refuse_or_warn_unmatched(plan: LoraPlan, unmatched: list[str], n_keys: int) -> None:
    """Nothing matched: refuse. Some keys matched nothing: refuse when strict, else warn with examples."""
    file, spec = plan.source.name, plan.spec
    if not plan.patches:
        raise WeightLoadError(
            f"LoRA {file}: none of its {n_keys} keys match a weight of the model (e.g. {', '.join(unmatched[:3])}); "
            "is it a LoRA for another model? Wan2.1 LoRAs name weights like "
            "diffusion_model.blocks.0.self_attn.q.lora_down.weight",
            files=[file],
            unexpected=unmatched,
        )
    if unmatched:
        msg = (
            f"LoRA {file}: {len(unmatched)} of its {n_keys} keys match no weight of the model, e.g. "
            f"{', '.join(unmatched[:3])}"
        )
        if spec.strict:
            raise WeightLoadError(
                msg + "; pass LoraSpec(strict=False) to merge the rest anyway", files=[file], unexpected=unmatched
            )
        logger.warning("%s; merging the %d others", msg, len(plan.patches))


def open_lora(spec: LoraSpec | str | Path, targets: Mapping[str, tuple[int, ...]]) -> LoraPlan:
    spec = spec if isinstance(spec, LoraSpec) else LoraSpec(spec)
    source = open_source(spec.path)
    try:
        return plan_lora(source, targets, spec)
    except BaseException:
        source.close()
        raise


def lora_delta(patch: LoraPatch, source: TensorSource, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """The float32 change that `patch` makes to a tensor of `shape`, computed on `device`."""
    if patch.kind == "lora":
        up = source.read(patch.keys[0]).to(device=device, dtype=torch.float32)
        down = source.read(patch.keys[1]).to(device=device, dtype=torch.float32)
        delta = (up.flatten(1) @ down.flatten(1)).reshape(shape)
    else:
        delta = source.read(patch.keys[0]).to(device=device, dtype=torch.float32).reshape(shape)
    return delta * patch.scale
