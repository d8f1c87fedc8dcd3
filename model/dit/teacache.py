"""TeaCache-style step skipping: reuse the blocks' residual when the timestep input barely moved.

The reference (`--use_teacache`, `teacache_thresh`, default 0.2) keeps, per guidance branch, the
residual the 40 blocks added to the tokens (out - in) and the "modulated input" of the last call
(the timestep projection e0 [B, 6, C] by default, "ret steps" mode; the time embedding e [B, C]
otherwise). Each call it adds poly(mean|inp - prev| / mean|prev|) to an accumulated distance;
while that stays below the threshold the blocks are skipped and the cached residual is added to
the fresh patch embedding instead (the head always runs); otherwise the blocks run, the residual
is stored and the distance resets. The first `warmup` steps always compute (5 in ret-steps mode,
1 otherwise) and, without ret steps, the last step too. The polynomial is a per-model fit.

Both inputs depend on the timestep alone, so the decisions depend only on the schedule: they are
the same for every branch and every window, and are worked out once, before sampling
(`plan_teacache`), with no device syncs during sampling. The residual itself is per branch (and
per batch element), held by a `ResidualCache` the caller passes to each forward.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

# np.poly1d coefficients (highest degree first) of the reference's rescale fits, per model and mode.
TEACACHE_COEFFICIENTS: dict[tuple[str, bool], tuple[float, ...]] = {
    ("infinitetalk-480", True): (2.57151496e05, -3.54229917e04, 1.40286849e03, -1.35890334e01, 1.32517977e-01),
    ("infinitetalk-720", True): (8.10705460e03, 2.13393892e03, -3.72934672e02, 1.66203073e01, -4.17769401e-02),
    ("infinitetalk-480", False): (-3.02331670e02, 2.23948934e02, -5.25463970e01, 5.87348440e00, -2.01973289e-01),
    ("infinitetalk-720", False): (-114.36346466, 65.26524496, -18.82220707, 4.91518089, -0.23412683),
}


@dataclass(frozen=True)
class TeaCacheSettings:
    """When to skip the DiT blocks. threshold <= 0 turns skipping off (every step computes).

    model_scale: "infinitetalk-480" or "infinitetalk-720" (which fitted polynomial).
    use_ret_steps: compare e0 (reference default) instead of e.
    warmup_steps / cutoff_steps: steps < warmup and steps >= cutoff always compute; None takes the
    reference's values (ret steps: 5 and never; otherwise 1 and steps - 1).
    coefficients: a polynomial of your own (highest degree first) instead of the fitted one.
    """

    threshold: float = 0.2
    model_scale: str = "infinitetalk-480"
    use_ret_steps: bool = True
    warmup_steps: int | None = None
    cutoff_steps: int | None = None
    coefficients: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.coefficients is None and (self.model_scale, self.use_ret_steps) not in TEACACHE_COEFFICIENTS:
            names = sorted({k[0] for k in TEACACHE_COEFFICIENTS})
            raise ValueError(f"no TeaCache coefficients for {self.model_scale!r}; choose one of {names} or pass coefficients")

    def poly(self) -> tuple[float, ...]:
        return self.coefficients or TEACACHE_COEFFICIENTS[(self.model_scale, self.use_ret_steps)]

    def bounds(self, steps: int) -> tuple[int, int]:
        """(warmup, cutoff): steps outside [warmup, cutoff) always compute."""
        warm = self.warmup_steps if self.warmup_steps is not None else (5 if self.use_ret_steps else 1)
        cut = self.cutoff_steps if self.cutoff_steps is not None else (steps if self.use_ret_steps else steps - 1)
        return warm, cut


def _polyval(coefficients: Sequence[float], x: float) -> float:
    acc = 0.0
    for c in coefficients:
        acc = acc * x + c
    return acc


def relative_l1(current: torch.Tensor, previous: torch.Tensor) -> float:
    """mean|current - previous| / mean|previous| (the reference's distance)."""
    return float(((current - previous).abs().mean() / previous.abs().mean()).item())


def plan_teacache(modulated: Sequence[torch.Tensor], settings: TeaCacheSettings) -> tuple[bool, ...]:
    """Which steps run the blocks (True) and which reuse the residual (False).

    modulated: the modulated input of each step (e0 or e for that step's timestep).
    """
    steps = len(modulated)
    if settings.threshold <= 0:
        return (True,) * steps
    warm, cut = settings.bounds(steps)
    coefficients = settings.poly()
    plan: list[bool] = []
    acc = 0.0
    previous: torch.Tensor | None = None
    for i, inp in enumerate(modulated):
        if i < warm or i >= cut or previous is None:
            compute, acc = True, 0.0
        else:
            acc += _polyval(coefficients, relative_l1(inp, previous))
            compute = acc >= settings.threshold
            if compute:
                acc = 0.0
        plan.append(compute)
        previous = inp
    skipped = plan.count(False)
    logger.debug("TeaCache plan: %d of %d steps reuse the residual", skipped, steps)
    return tuple(plan)


class ResidualCache:
    """One branch group's cached block residual (tokens after the blocks minus before).

    reuse=False: the forward runs the blocks and stores the residual; reuse=True: the forward skips
    the blocks and adds the stored residual. The batch layout must stay the same between calls.
    """

    def __init__(self) -> None:
        self.residual: torch.Tensor | None = None
        self.reuse = False
        self.skipped = 0

    def apply(self, tokens: torch.Tensor) -> torch.Tensor:
        # tokens: [B, L, C] -> [B, L, C]
        if self.residual is None or self.residual.shape != tokens.shape:
            raise RuntimeError(
                "TeaCache: no stored residual of this shape to reuse; the first step of a window must compute "
                f"(stored {None if self.residual is None else list(self.residual.shape)}, tokens {list(tokens.shape)})"
            )
        self.skipped += 1
        return tokens + self.residual

    def store(self, before: torch.Tensor, after: torch.Tensor) -> None:
        self.residual = after - before
