"""Build the infinitetalk backend from command-line style options (weights folder or the tiny test model)."""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from model.dit.teacache import TeaCacheSettings
from model.infinitetalk import ModelFiles, SpeedOptions, load_bundle
from model.infinitetalk.manifest import record_weights, verify_weights
from model.infinitetalk.presets import KIND_PRESETS, get_preset, preset_size
from model.infinitetalk.tiny import write_tiny_weights
from model.sampling import GuidanceScales, distilled_step_list
from model.weights import MANIFEST_NAME

from .features import FeatureSettings
from .infinitetalk_backend import InfiniteTalkBackendSettings, InfiniteTalkGenerator

log = logging.getLogger(__name__)

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
    features: FeatureSettings = field(default_factory=FeatureSettings)
    fp8: str | None = None  # "row" | "tensor" | "none" (weight-only): fp8 DiT block linears
    compile: bool = False  # torch.compile the DiT blocks
    cuda_graphs: bool = False  # replay DiT forwards from CUDA graphs (static window shapes)
    teacache: float | None = None  # TeaCache threshold (e.g. 0.2); None = every step computes
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


def build_infinitetalk_generator(opts: InfiniteTalkOptions) -> InfiniteTalkGenerator:
    """Load the model (raising MissingWeightsError before anything heavy when files are missing)."""
    device = torch.device(opts.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = _dtype(opts.dtype, device)
    size = opts.size
    manifest: Path | None = None
    if opts.preset == TINY_RANDOM:
        log.warning(NOISE_WARNING)
        root = Path(tempfile.mkdtemp(prefix="infinitetalk-tiny-"))
        write_tiny_weights(root, seed=opts.seed)
        files = ModelFiles.discover(root)
        dtype = torch.float32 if device.type == "cpu" else dtype
        size = size or (64, 64)
    elif opts.weights_config is not None:
        files = ModelFiles.from_json(opts.weights_config)
        manifest = opts.weights_config.parent / MANIFEST_NAME
    elif opts.weights is not None:
        files = ModelFiles.discover(opts.weights)
        manifest = opts.weights / MANIFEST_NAME
    else:
        raise ValueError("backend infinitetalk needs --weights DIR (or --weights-config FILE, or --preset tiny-random)")
    if opts.preset is None:
        opts = dataclasses.replace(opts, preset=KIND_PRESETS[files.kind])
        log.info("weights are %s: using preset %s (choose another with --preset)", files.kind, opts.preset)
    elif opts.preset in KIND_PRESETS.values() and opts.preset != KIND_PRESETS[files.kind]:
        log.warning("preset %s on %s weights: this model is meant for preset %s", opts.preset, files.kind,
                    KIND_PRESETS[files.kind])
    size = size or preset_size(opts.preset)
    if opts.loras:
        files = files.with_loras(list(files.loras) + list(opts.loras))
    unrecorded: list[Path] = []
    if manifest is not None and opts.verify_weights != "off":
        unrecorded = verify_weights(files, manifest, opts.verify_weights)  # raises WeightLoadError naming bad files
    speed = SpeedOptions(fp8=opts.fp8, compile=opts.compile, cuda_graphs=opts.cuda_graphs)
    bundle = load_bundle(files, device=device, dtype=dtype, prompt=opts.prompt, negative_prompt=opts.negative_prompt,
                         speed=speed)
    if manifest is not None and unrecorded:
        record_weights(manifest, unrecorded)
    if opts.preset == TINY_RANDOM:
        bundle.description = "TINY RANDOM MODEL (video is noise) " + bundle.description
    bundle.description += f", preset {opts.preset}"
    settings = InfiniteTalkBackendSettings(window=window_settings(opts), size=size, seed=opts.seed,
                                           features=opts.features, idle=opts.idle)  # type: ignore[arg-type]
    return InfiniteTalkGenerator(bundle, settings)
