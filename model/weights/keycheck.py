"""Compare a state dict with what a module expects: missing, unexpected and mis-shaped keys."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class KeyMismatch:
    missing: list[str]
    unexpected: list[str]
    shapes: list[str]

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shapes)

    def describe(self, first: int = 5) -> str:
        """'missing N: [...], unexpected N: [...], shape mismatches: [...]' (the first few of each)."""
        return (f"missing {len(self.missing)}: {self.missing[:first]}, unexpected {len(self.unexpected)}: "
                f"{self.unexpected[:first]}, shape mismatches: {self.shapes[:first]}")


def key_mismatches(
    expected: Mapping[str, tuple[int, ...]],
    state: Mapping[str, torch.Tensor],
    ignore: Callable[[str], bool] = lambda key: False,
) -> KeyMismatch:
    """`expected`: key -> shape the module wants; keys of `state` for which `ignore` is true don't count."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(k for k in state if k not in expected and not ignore(k))
    shapes = [
        f"{k}: file {list(state[k].shape)} vs model {list(s)}"
        for k, s in expected.items()
        if k in state and tuple(state[k].shape) != tuple(s)
    ]
    return KeyMismatch(missing, unexpected, shapes)
