"""Build the infinitetalk backend from command-line style options (weights folder or the tiny test model)."""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from model.dit.parallel import SequenceParallel, init_from_env
from model.dit.parallel_serve import BroadcastingDiT, BroadcastingVAE, follow
from model.dit.teacache import TeaCacheSettings
from model.infinitetalk import ModelFiles, SpeedOptions, load_bundle
from model.infinitetalk.bundle import load_dit, load_vae
from model.infinitetalk.manifest import record_weights, verify_weights
from model.infinitetalk.presets import KIND_PRESETS, get_preset, preset_size
from model.infinitetalk.tiny import write_tiny_weights
from model.sampling import GuidanceScales, distilled_step_list
from model.vae.split import DECODE_HALO
from model.weights import MANIFEST_NAME

from .features import FeatureSettings
from .infinitetalk_backend import InfiniteTalkBackendSettings, InfiniteTalkGenerator

log = logging.getLogger(__name__)

# Speech-feature path per preset where it is not "incremental": FlashTalk streams with rolling features.
PRESET_AUDIO_FEATURES = {"flashtalk": "rolling"}

TINY_RANDOM = "tiny-random"
NOISE_WARNING = (
    "backend infinitetalk with preset tiny-random: RANDOM WEIGHTS, THE VIDEO IS NOISE. "
    "It exercises the whole pipeline for tests and demos; use --weights DIR for the real model."
)


@dataclass(frozen=True)
class InfiniteTalkOptions:
    """What `serve`/`render` accept for the infinitetalk backend (None = the preset's value).

    preset None: the default of the weights' kind ("infinitetalk" for the InfiniteTalk release,
    "flashtalk" for a SoulX-FlashTalk-14B folder).
    """

    weights: Path | None = None
    weights_config: Path | None = None
    preset: str | None = None
    device: str | None = None
    dtype: str | None = None
    size: tuple[int, int] | None = None
    frames: int | None = None
    motion_frames: int | None = None
    steps: int | None = None
    shift: float | None = None
    text_scale: float | None = None
    audio_scale: float | None = None
    colour_strength: float | None = None
    seed: int = 0
    loras: tuple[tuple[Path, float], ...] = ()
    prompt: str | None = None
    negative_prompt: str | None = None
    idle: str = "generate"
    audio_features: str | None = None  # "incremental" | "rolling"; None: the preset's (PRESET_AUDIO_FEATURES)
    features: FeatureSettings = field(default_factory=FeatureSettings)
    fp8: str | None = None  # "row" | "tensor" | "none" (weight-only): fp8 DiT block linears
    compile: bool = False  # torch.compile the DiT blocks
    cuda_graphs: bool = False  # replay DiT forwards from CUDA graphs (static window shapes)
    teacache: float | None = None  # TeaCache threshold (e.g. 0.2); None = every step computes
    sequence_parallel: bool = False  # under torchrun: the DiT runs split over every rank (rank 0 serves)
    vae_split: bool = False  # with sequence_parallel: VAE encode/decode split into spatial tiles over the ranks
    vae_split_halo: int | None = None  # latent positions run around each decode tile (encode: half, rounded
    # up); None: the reference's (DECODE_HALO)
    verify_weights: str = "full"
    """full | size | off: check the files against `weights.sha256.json` in the weights folder (or
    beside --weights-config) before loading; the manifest is recorded after the first good load."""


def _dtype(name: str | None, device: torch.device) -> torch.dtype:
    if name is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if name not in table:
        raise ValueError(f"dtype {name!r} not supported: use one of {', '.join(table)} (fp8 linears: --fp8)")
    return table[name]


def window_settings(opts: InfiniteTalkOptions):
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


def audio_features(opts: InfiniteTalkOptions) -> Literal["incremental", "rolling"]:
    """The speech-feature path: as asked, else the preset's (FlashTalk streams with rolling features)."""
    choice = opts.audio_features or PRESET_AUDIO_FEATURES.get(opts.preset or "", "incremental")
    if choice not in ("incremental", "rolling"):
        raise ValueError(f"audio features {choice!r}: use 'incremental' or 'rolling'")
    return choice  # type: ignore[return-value]


def _resolve_files(opts: InfiniteTalkOptions) -> tuple[ModelFiles, InfiniteTalkOptions, tuple[int, int] | None]:
    """Which files to load (tiny-random writes them), the preset that goes with them, the size."""
    size = opts.size
    if opts.preset == TINY_RANDOM:
        log.warning(NOISE_WARNING)
        root = Path(tempfile.mkdtemp(prefix="infinitetalk-tiny-"))
        write_tiny_weights(root, seed=opts.seed)
        files = ModelFiles.discover(root)
        size = size or (64, 64)
    elif opts.weights_config is not None:
        files = ModelFiles.from_json(opts.weights_config)
    elif opts.weights is not None:
        files = ModelFiles.discover(opts.weights)
    else:
        raise ValueError("backend infinitetalk needs --weights DIR (or --weights-config FILE, or --preset tiny-random)")
    if opts.preset is None:
        opts = dataclasses.replace(opts, preset=KIND_PRESETS[files.kind])
        log.info("weights are %s: using preset %s (choose another with --preset)", files.kind, opts.preset)
    elif opts.preset in KIND_PRESETS.values() and opts.preset != KIND_PRESETS[files.kind]:
        log.warning("preset %s on %s weights: this model is meant for preset %s", opts.preset, files.kind,
                    KIND_PRESETS[files.kind])
    if opts.loras:
        files = files.with_loras(list(files.loras) + list(opts.loras))
    return files, opts, size or preset_size(opts.preset)


def _manifest_path(opts: InfiniteTalkOptions) -> Path | None:
    """Where the sha256 manifest of the user's weights lives (None: tiny-random, or verification off)."""
    if opts.verify_weights == "off" or opts.preset == TINY_RANDOM:
        return None
    if opts.weights_config is not None:
        return opts.weights_config.parent / MANIFEST_NAME
    return opts.weights / MANIFEST_NAME if opts.weights is not None else None


def _device_and_dtype(opts: InfiniteTalkOptions) -> tuple[torch.device, torch.dtype, SequenceParallel | None]:
    sp = None
    if opts.sequence_parallel:
        sp, device = init_from_env()
    else:
        device = torch.device(opts.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = _dtype(opts.dtype, device)
    if opts.preset == TINY_RANDOM and device.type == "cpu":
        dtype = torch.float32
    return device, dtype, sp


def build_infinitetalk_generator(opts: InfiniteTalkOptions) -> InfiniteTalkGenerator:
    """Load the model (raising MissingWeightsError before anything heavy when files are missing).

    With sequence_parallel (under torchrun) this is rank 0's part: its DiT calls are broadcast to the
    other ranks, which run `run_follower` with the same options.
    """
    if opts.vae_split and not opts.sequence_parallel:
        raise ValueError("--vae-split splits the VAE over the processes of --sequence-parallel (under torchrun); "
                         "add --sequence-parallel")
    if opts.vae_split_halo is not None and opts.vae_split_halo < 0:
        raise ValueError(f"--vae-split-halo must be >= 0 latent positions, got {opts.vae_split_halo}")
    files, opts, size = _resolve_files(opts)
    manifest = _manifest_path(opts)
    # A changed or truncated file is refused here, naming it (WeightLoadError), before anything loads.
    unrecorded = verify_weights(files, manifest, opts.verify_weights) if manifest is not None else []
    device, dtype, sp = _device_and_dtype(opts)
    speed = SpeedOptions(fp8=opts.fp8, compile=opts.compile, cuda_graphs=opts.cuda_graphs and sp is None)
    bundle = load_bundle(files, device=device, dtype=dtype, prompt=opts.prompt, negative_prompt=opts.negative_prompt,
                         speed=speed)
    if manifest is not None and unrecorded:
        record_weights(manifest, unrecorded)
    if opts.preset == TINY_RANDOM:
        bundle.description = "TINY RANDOM MODEL (video is noise) " + bundle.description
    bundle.description += f", preset {opts.preset}"
    if sp is not None:
        if sp.rank != 0:
            raise RuntimeError("only rank 0 builds the generator; the other ranks run run_follower()")
        bundle.pipe.dit.enable_sequence_parallel(sp)
        bundle.pipe.dit = bundle.pipe.dit_forward = BroadcastingDiT(bundle.pipe.dit, sp)
        bundle.description += f", DiT split over {sp.world} processes (sequence parallel)"
        if opts.vae_split:
            halo = DECODE_HALO if opts.vae_split_halo is None else opts.vae_split_halo
            bundle.pipe.vae = BroadcastingVAE(bundle.pipe.vae, sp, decode_halo=halo,  # type: ignore[assignment]
                                              encode_halo=(halo + 1) // 2)
            bundle.description += f", VAE split into spatial tiles (halo {halo})"
    settings = InfiniteTalkBackendSettings(window=window_settings(opts), size=size, seed=opts.seed,
                                           features=opts.features, audio_features=audio_features(opts),
                                           idle=opts.idle)  # type: ignore[arg-type]
    return InfiniteTalkGenerator(bundle, settings)


def run_follower(opts: InfiniteTalkOptions) -> int:
    """Ranks > 0 of a sequence-parallel server: load the DiT (and the VAE with vae_split) and run rank 0's
    calls until it stops."""
    files, opts, _ = _resolve_files(opts)
    device, dtype, sp = _device_and_dtype(dataclasses.replace(opts, sequence_parallel=True))
    assert sp is not None
    dit = load_dit(files, device=device, dtype=dtype,
                   speed=SpeedOptions(fp8=opts.fp8, compile=opts.compile))
    dit.enable_sequence_parallel(sp)
    vae = load_vae(files, device) if opts.vae_split else None
    try:
        return follow(dit, sp, vae)
    finally:
        torch.distributed.destroy_process_group()
