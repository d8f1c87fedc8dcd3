"""A ready InfiniteTalk-family model (InfiniteTalk or SoulX-FlashTalk) from `ModelOptions`.

Resolves the files (a weights folder, a weights config, or the tiny random model written on the
spot), the preset (the weights kind's unless one is given), device and dtype; verifies the files
against their manifest; loads every network with the speed options; and under torchrun with
sequence_parallel builds rank 0's split DiT (and VAE), while `run_follower` is what ranks > 0 run.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from model.dit.parallel import SequenceParallel, init_from_env
from model.dit.parallel_serve import ParallelPlan, follow
from model.dit.teacache import TeaCacheSettings
from model.families.options import TINY_RANDOM, ModelOptions
from model.sampling import GuidanceScales, distilled_step_list
from model.vae.split import DECODE_HALO
from model.weights import MANIFEST_NAME

from .bundle import InfiniteTalkBundle, ModelFiles, load_bundle, load_dit, load_vae
from .kinds import UnknownWeightsError, detect_weights_kind
from .manifest import record_weights, verify_weights
from .presets import KIND_PRESETS, get_preset, preset_size
from .settings import WindowSettings
from .speed import SpeedOptions
from .tiny import write_tiny_weights

log = logging.getLogger(__name__)

NOISE_WARNING = (
    "backend infinitetalk with preset tiny-random: RANDOM WEIGHTS, THE VIDEO IS NOISE. "
    "It exercises the whole pipeline for tests and demos; use --weights DIR for the real model."
)
TINY_SIZE = (64, 64)
"""Generation size of the tiny random model when none is given."""


@dataclass
class InfiniteTalkModel:
    """A loaded model ready for its preset: the networks, the window settings (preset + overrides), the
    generation size (None: the avatar's 480p bucket) and the preset's name."""

    bundle: InfiniteTalkBundle
    window: WindowSettings
    size: tuple[int, int] | None
    preset: str


def detect(root: Path) -> str | None:
    """The kind of an InfiniteTalk-family weights folder, or None for a folder of another kind."""
    try:
        return detect_weights_kind(root)
    except UnknownWeightsError:
        return None


def window_settings(opts: ModelOptions) -> WindowSettings:
    """The preset's window settings with the options' overrides."""
    base = get_preset(opts.preset or "infinitetalk")
    changes = {k: v for k, v in (("frame_num", opts.frames), ("motion_frames", opts.motion_frames),
                                 ("steps", opts.steps), ("shift", opts.shift),
                                 ("colour_strength", opts.colour_strength)) if v is not None}
    if opts.text_scale is not None or opts.audio_scale is not None:
        changes["guidance"] = GuidanceScales(
            opts.text_scale if opts.text_scale is not None else base.guidance.text,
            opts.audio_scale if opts.audio_scale is not None else base.guidance.audio,
        )
    if opts.teacache is not None:
        changes["teacache"] = TeaCacheSettings(threshold=opts.teacache)
    if "steps" in changes and base.step_list is not None:
        # An explicit step count replaces a distilled schedule by the distilled steps for that count
        # (2 -> [1000, 500], 4 -> [1000, 750, 500, 250]), else by the evenly spaced reference one.
        changes["step_list"] = distilled_step_list(changes["steps"])
    return dataclasses.replace(base, **changes)


def resolve_files(opts: ModelOptions) -> tuple[ModelFiles, ModelOptions]:
    """Which files to load (tiny-random writes them) and the options with the preset that goes with them."""
    if opts.preset == TINY_RANDOM:
        log.warning(NOISE_WARNING)
        root = Path(tempfile.mkdtemp(prefix="infinitetalk-tiny-"))
        write_tiny_weights(root, seed=opts.seed)
        files = ModelFiles.discover(root)
    elif opts.weights_config is not None:
        files = ModelFiles.from_json(opts.weights_config)
    elif opts.weights is not None:
        files = ModelFiles.discover(opts.weights)
    else:
        raise ValueError("backend infinitetalk needs --weights DIR (or --weights-config FILE, or --preset "
                         "tiny-random for a random test model); without weights, --backend lite runs anywhere")
    if opts.preset is None:
        opts = dataclasses.replace(opts, preset=KIND_PRESETS[files.kind])
        log.info("weights are %s: using preset %s (choose another with --preset)", files.kind, opts.preset)
    elif opts.preset in KIND_PRESETS.values() and opts.preset != KIND_PRESETS[files.kind]:
        log.warning("preset %s on %s weights: this model is meant for preset %s", opts.preset, files.kind,
                    KIND_PRESETS[files.kind])
    if opts.loras:
        files = files.with_loras(list(files.loras) + list(opts.loras))
    return files, opts


def _size(opts: ModelOptions) -> tuple[int, int] | None:
    if opts.size is not None:
        return opts.size
    return TINY_SIZE if opts.preset == TINY_RANDOM else preset_size(opts.preset or "")


def _manifest_path(opts: ModelOptions) -> Path | None:
    """Where the sha256 manifest of the user's weights lives (None: tiny-random, or verification off)."""
    if opts.verify_weights == "off" or opts.preset == TINY_RANDOM:
        return None
    if opts.weights_config is not None:
        return opts.weights_config.parent / MANIFEST_NAME
    return opts.weights / MANIFEST_NAME if opts.weights is not None else None


def _dtype(name: str | None, device: torch.device) -> torch.dtype:
    if name is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if name not in table:
        raise ValueError(f"dtype {name!r} not supported: use one of {', '.join(table)} (fp8 linears: --fp8)")
    return table[name]


def _device_and_dtype(opts: ModelOptions) -> tuple[torch.device, torch.dtype, SequenceParallel | None]:
    sp = None
    if opts.sequence_parallel:
        sp, device = init_from_env()
    else:
        device = torch.device(opts.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = _dtype(opts.dtype, device)
    if opts.preset == TINY_RANDOM and device.type == "cpu":
        dtype = torch.float32
    return device, dtype, sp


def _plan(opts: ModelOptions, sp: SequenceParallel | None) -> ParallelPlan | None:
    if sp is None:
        return None
    if sp.rank != 0:
        raise RuntimeError("only rank 0 builds the model; the other ranks run run_follower()")
    halo = DECODE_HALO if opts.vae_split_halo is None else opts.vae_split_halo
    return ParallelPlan(sp, vae_split=opts.vae_split, decode_halo=halo)


def build(opts: ModelOptions) -> InfiniteTalkModel:
    """Load the model for the options (raising MissingWeightsError before anything heavy when files are
    missing). With sequence_parallel (under torchrun) this is rank 0's part; the others run `run_follower`."""
    files, opts = resolve_files(opts)
    manifest = _manifest_path(opts)
    # A changed or truncated file is refused here, naming it (WeightLoadError), before anything loads.
    unrecorded = verify_weights(files, manifest, opts.verify_weights) if manifest is not None else []
    device, dtype, sp = _device_and_dtype(opts)
    speed = SpeedOptions(fp8=opts.fp8, compile=opts.compile, cuda_graphs=opts.cuda_graphs)
    bundle = load_bundle(files, device=device, dtype=dtype, prompt=opts.prompt, negative_prompt=opts.negative_prompt,
                         speed=speed, parallel=_plan(opts, sp))
    if manifest is not None and unrecorded:
        record_weights(manifest, unrecorded)
    if opts.preset == TINY_RANDOM:
        bundle.description = "TINY RANDOM MODEL (video is noise) " + bundle.description
    bundle.description += f", preset {opts.preset}"
    assert opts.preset is not None  # resolve_files picked one
    return InfiniteTalkModel(bundle, window_settings(opts), _size(opts), opts.preset)


def run_follower(opts: ModelOptions) -> int:
    """Ranks > 0 of a sequence-parallel run: load the DiT (and the VAE with vae_split) and run rank 0's
    calls until it stops; returns how many were served."""
    files, opts = resolve_files(opts)
    device, dtype, sp = _device_and_dtype(dataclasses.replace(opts, sequence_parallel=True))
    assert sp is not None
    dit = load_dit(files, device=device, dtype=dtype, speed=SpeedOptions(fp8=opts.fp8, compile=opts.compile))
    dit.enable_sequence_parallel(sp)
    vae = load_vae(files, device) if opts.vae_split else None
    try:
        return follow(dit, sp, vae)
    finally:
        torch.distributed.destroy_process_group()
