"""Model-side speed switches as data: what the engine and the CLI expose (see docs/performance.md).

    bundle = load_bundle(files, device="cuda", speed=SpeedOptions(fp8="row", compile=True, cuda_graphs=True))

fp8 has to be chosen before the weights load (the block linears are built as fp8 linears and filled
straight from the files); compile is applied to the loaded DiT (`load_dit`, so the follower ranks of
a sequence-parallel server compile too) and CUDA graphs to the loaded pipeline. TeaCache is a
sampling setting (`WindowSettings.teacache`), sequence parallelism a launch mode
(`InfiniteTalkDiT.enable_sequence_parallel` under torchrun).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from model.dit import InfiniteTalkDiT
from model.dit.fp8_linear import ACTIVATION_MODES, quantize_linears_

from .pipeline import InfiniteTalkPipeline

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpeedOptions:
    """fp8: None (bf16 linears), or the activation mode of fp8 block linears: "row" (per-token scales,
    fp8 tensor cores), "tensor" (one scale), "none" (weight-only fp8: memory, not speed).
    compile / compile_mode: torch.compile the DiT blocks (mode e.g. "max-autotune-no-cudagraphs").
    cuda_graphs / max_graphs: replay DiT forwards from CUDA graphs (no-op off CUDA)."""

    fp8: str | None = None
    compile: bool = False
    compile_mode: str | None = None
    cuda_graphs: bool = False
    max_graphs: int = 4

    def __post_init__(self) -> None:
        if self.fp8 is not None and self.fp8 not in ACTIVATION_MODES:
            raise ValueError(f"fp8 must be None or one of {ACTIVATION_MODES}, got {self.fp8!r}")
        if self.max_graphs < 1:
            raise ValueError("max_graphs must be >= 1")


def prepare_dit_for_loading(dit: InfiniteTalkDiT, speed: SpeedOptions) -> None:
    """Before the weights load (on a meta-built DiT): fp8 block linears when asked."""
    if speed.fp8 is not None:
        quantize_linears_(dit, activations=speed.fp8)


def finish_loaded_dit(dit: InfiniteTalkDiT, speed: SpeedOptions) -> None:
    """After the weights load, on every rank that runs the DiT: compile the blocks when asked."""
    if speed.compile:
        dit.compile_blocks(mode=speed.compile_mode)


def apply_speed_options(pipe: InfiniteTalkPipeline, speed: SpeedOptions) -> None:
    """After loading the pipeline (its DiT already finished by `finish_loaded_dit`): CUDA graphs."""
    if speed.cuda_graphs:
        pipe.use_cuda_graphs(True, max_graphs=speed.max_graphs)
    log.info("speed options: %s", speed)
