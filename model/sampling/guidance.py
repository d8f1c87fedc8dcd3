"""Text and audio guidance: which DiT branches a setting needs and how their outputs are combined.

InfiniteTalk guides on two conditions. Each branch is one DiT evaluation that differs only in the
text context (prompt or negative prompt) and the audio (real or all-zero):

    cond        prompt   + audio
    drop_text   negative + audio
    uncond      negative + zero audio
    drop_audio  prompt   + zero audio

text scale != 1 -> 3 branches (cond, drop_text, uncond):
    g = uncond + ts*(cond - drop_text) + as*(drop_text - uncond)
text scale == 1 -> 2 branches (cond, drop_audio):
    g = drop_audio + as*(cond - drop_audio)
both == 1       -> 1 branch (cond): g = cond (the reference still runs drop_audio here and gets the
    same value up to rounding; one call per step is what makes few-step LoRAs cheap).

Branches of one step share the latent and timestep, so a caller can stack them on the batch axis
in `branches()` order and run the DiT once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

COND = "cond"
DROP_TEXT = "drop_text"
UNCOND = "uncond"
DROP_AUDIO = "drop_audio"


@dataclass(frozen=True)
class BranchSpec:
    """What one guidance branch feeds the DiT: negative prompt instead of the prompt, zero audio."""

    name: str
    negative_text: bool
    zero_audio: bool


BRANCH_SPECS: dict[str, BranchSpec] = {
    COND: BranchSpec(COND, negative_text=False, zero_audio=False),
    DROP_TEXT: BranchSpec(DROP_TEXT, negative_text=True, zero_audio=False),
    UNCOND: BranchSpec(UNCOND, negative_text=True, zero_audio=True),
    DROP_AUDIO: BranchSpec(DROP_AUDIO, negative_text=False, zero_audio=True),
}


def _is_one(x: float) -> bool:
    # The reference tests the text scale with math.isclose (rel_tol 1e-9).
    return math.isclose(x, 1.0)


@dataclass(frozen=True)
class GuidanceScales:
    """Classifier-free guidance scales. Reference defaults: text 5, audio 4; with LoRAs: 1 and 2."""

    text: float = 5.0
    audio: float = 4.0

    def branches(self) -> tuple[str, ...]:
        """Branch names this setting needs, in the order a batched DiT call should stack them."""
        if not _is_one(self.text):
            return (COND, DROP_TEXT, UNCOND)
        if not _is_one(self.audio):
            return (COND, DROP_AUDIO)
        return (COND,)

    def branch_specs(self) -> tuple[BranchSpec, ...]:
        return tuple(BRANCH_SPECS[b] for b in self.branches())

    @property
    def calls_per_step(self) -> int:
        return len(self.branches())


def guidance_branches(scales: GuidanceScales) -> tuple[str, ...]:
    """Function form of `GuidanceScales.branches` (names in batch order)."""
    return scales.branches()


def _need(preds: Mapping[str, torch.Tensor], names: tuple[str, ...]) -> None:
    missing = [n for n in names if n not in preds]
    if missing:
        raise KeyError(f"guidance needs DiT outputs for branches {list(names)}; missing {missing}")


def combine_guidance(preds: Mapping[str, torch.Tensor], scales: GuidanceScales) -> torch.Tensor:
    """Vanilla CFG of the reference, evaluated in its order. preds: branch name -> [C, T, H, W]."""
    names = scales.branches()
    _need(preds, names)
    if len(names) == 3:
        cond, drop_text, uncond = preds[COND], preds[DROP_TEXT], preds[UNCOND]
        return uncond + scales.text * (cond - drop_text) + scales.audio * (drop_text - uncond)
    if len(names) == 2:
        cond, drop_audio = preds[COND], preds[DROP_AUDIO]
        return drop_audio + scales.audio * (cond - drop_audio)
    return preds[COND]


# --------------------------------------------------------------------------------------------------
# APG: adaptive projected guidance (arXiv 2410.02416), the reference's optional `--use_apg`.


class MomentumBuffer:
    """Running sum with negative momentum over steps: avg <- diff + momentum * avg (starts at 0)."""

    def __init__(self, momentum: float = -0.75) -> None:
        self.momentum = momentum
        self.running_average: torch.Tensor | float = 0.0

    def update(self, value: torch.Tensor) -> torch.Tensor:
        self.running_average = value + self.momentum * self.running_average
        return self.running_average


def _project(v: torch.Tensor, onto: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Split v into parts parallel and orthogonal to `onto`, in float64 over `dims`."""
    v64, u64 = v.double(), onto.double()
    u64 = u64 / u64.norm(p=2, dim=dims, keepdim=True).clamp_min(1e-12)
    parallel = (v64 * u64).sum(dim=dims, keepdim=True) * u64
    return parallel.to(v.dtype), (v64 - parallel).to(v.dtype)


def adaptive_projected_guidance(diff: torch.Tensor, pred_cond: torch.Tensor,
                                momentum_buffer: MomentumBuffer | None = None, eta: float = 0.0,
                                norm_threshold: float = 55.0) -> torch.Tensor:
    """APG update for one guidance difference; diff, pred_cond: [..., C, T, H, W].

    momentum (buffer updated in place) -> rescale so the L2 norm over (C, T, H, W) is at most
    `norm_threshold` -> keep the part orthogonal to pred_cond plus eta times the parallel part.
    """
    dims = (-1, -2, -3, -4)
    if momentum_buffer is not None:
        diff = momentum_buffer.update(diff)
    if norm_threshold > 0:
        norm = diff.norm(p=2, dim=dims, keepdim=True)
        diff = diff * torch.minimum(torch.ones_like(diff), norm_threshold / norm)
    parallel, orthogonal = _project(diff, pred_cond, dims)
    return orthogonal + eta * parallel


@dataclass
class APGGuidance:
    """Per-window APG state: one momentum buffer per guidance difference (text, audio).

    Build a fresh one for every window (the reference does, before its step loop).
    """

    momentum: float = -0.75
    norm_threshold: float = 55.0
    eta: float = 0.0
    text_buffer: MomentumBuffer = field(init=False)
    audio_buffer: MomentumBuffer = field(init=False)

    def __post_init__(self) -> None:
        self.text_buffer = MomentumBuffer(self.momentum)
        self.audio_buffer = MomentumBuffer(self.momentum)

    def _apg(self, diff: torch.Tensor, cond: torch.Tensor, buf: MomentumBuffer) -> torch.Tensor:
        return adaptive_projected_guidance(diff, cond, buf, eta=self.eta, norm_threshold=self.norm_threshold)

    def combine(self, preds: Mapping[str, torch.Tensor], scales: GuidanceScales) -> torch.Tensor:
        """cond + (ts-1)*APG(cond - drop_text) + (as-1)*APG(drop_text - uncond), or the 2-branch form
        cond + (as-1)*APG(cond - drop_audio) when the text scale is 1."""
        names = scales.branches()
        _need(preds, names)
        cond = preds[COND]
        if len(names) == 3:
            text = self._apg(cond - preds[DROP_TEXT], cond, self.text_buffer)
            audio = self._apg(preds[DROP_TEXT] - preds[UNCOND], cond, self.audio_buffer)
            return cond + (scales.text - 1) * text + (scales.audio - 1) * audio
        if len(names) == 2:
            audio = self._apg(cond - preds[DROP_AUDIO], cond, self.audio_buffer)
            return cond + (scales.audio - 1) * audio
        return cond
