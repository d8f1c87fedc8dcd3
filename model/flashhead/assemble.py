"""A ready FlashHead model (Pro or Lite) from `ModelOptions`: files found (or all listed), sizes from
config.json, every network loaded and checked against the others, the preset's chunk settings."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import Wav2Vec2Model

from model.audio.loader import Wav2Vec2LoadError, load_wav2vec2
from model.dit.flashhead import FlashHeadDiT
from model.families.options import ModelOptions

from .config import FlashHeadConfig
from .dit_loader import load_flashhead_dit
from .loop import ChunkSettings
from .presets import PRESETS, ROLLING_SECONDS, SAMPLERS, SIZE
from .release import (
    KIND_LABELS,
    LITE,
    PRO,
    FlashHeadFiles,
    FlashHeadFilesError,
    detect_flashhead_kind,
    discover_flashhead,
)
from .vae import ChunkVAEs, load_ltx_chunk_vae, load_wan_chunk_vae

log = logging.getLogger(__name__)

TINY_NOTE = "TINY RANDOM MODEL (video is noise) "


@dataclass
class FlashHeadModel:
    """The networks, the chunk settings (preset + overrides), the generation size and the preset."""

    dit: FlashHeadDiT
    vae: ChunkVAEs
    wav2vec2: Wav2Vec2Model
    config: FlashHeadConfig
    chunk: ChunkSettings
    size: tuple[int, int]
    preset: str
    description: str
    rolling_seconds: float = ROLLING_SECONDS

    @property
    def motion_frames(self) -> int:
        return self.vae.frames_for_latents(self.chunk.motion_latents)

    @property
    def new_frames(self) -> int:
        """Frames each chunk adds to a stream: frame_num - motion_frames (28 on Pro)."""
        return self.chunk.frame_num - self.motion_frames

    def close(self) -> None:
        """Nothing beyond this process to release (single-GPU model)."""


def detect(root: Path) -> str | None:
    return detect_flashhead_kind(root)


def chunk_settings(opts: ModelOptions, preset: str) -> ChunkSettings:
    """The preset's chunk settings with the options that apply to FlashHead."""
    base = PRESETS[preset]
    changes: dict = {}
    if opts.frames is not None:
        changes["frame_num"] = opts.frames
    if opts.colour_strength is not None:
        changes["colour_strength"] = opts.colour_strength
    if opts.steps is not None:
        if opts.steps not in SAMPLERS:
            raise ValueError(f"FlashHead's distilled models run {sorted(SAMPLERS)} steps, not {opts.steps}")
        changes["sampler"] = SAMPLERS[opts.steps]
    return dataclasses.replace(base, **changes)


def _refuse_unsupported(opts: ModelOptions) -> None:
    unsupported = [name for name, given in (
        ("--sequence-parallel", opts.sequence_parallel), ("--lora", bool(opts.loras)), ("--fp8", opts.fp8 is not None),
        ("--teacache", opts.teacache is not None), ("--prompt", opts.prompt is not None),
        ("--text-scale / --audio-scale", opts.text_scale is not None or opts.audio_scale is not None),
        ("--motion-frames (FlashHead carries 2 latent frames)", opts.motion_frames is not None),
        ("--shift", opts.shift is not None), ("--cuda-graphs", opts.cuda_graphs),
    ) if given]
    if unsupported:
        raise ValueError(f"FlashHead presets do not take {', '.join(unsupported)} (single GPU, distilled, no text)")


def _files(opts: ModelOptions) -> tuple[FlashHeadFiles, str]:
    """The files and the preset (the one asked for, else the folder's kind)."""
    if opts.weights is None:
        raise FlashHeadFilesError(
            f"preset {opts.preset} needs --weights DIR: the SoulX-FlashHead-1_3B folder (Model_Pro/ and VAE_Wan/, "
            "or Model_Lite/ and VAE_LTX/) with wav2vec2-base-960h/ inside or next to it")
    kind = opts.preset or detect_flashhead_kind(opts.weights) or PRO
    return discover_flashhead(opts.weights, kind), kind


def _check_pair(cfg: FlashHeadConfig, vae: ChunkVAEs, wav2vec2: Wav2Vec2Model, files: FlashHeadFiles) -> None:
    """The VAE and wav2vec2 must be the ones this DiT was trained with: one clear error each."""
    want = (cfg.vae_stride[0], cfg.vae_stride[1], cfg.latent_channels)
    have = (vae.temporal_stride, vae.spatial_stride, vae.latent_channels)
    if want != have:
        raise FlashHeadFilesError(
            f"{files.vae} does not fit {files.model_dir}: the DiT expects a VAE with stride {want[0]}x{want[1]} and "
            f"{want[2]} latent channels, this one has {have[0]}x{have[1]} and {have[2]} (a Lite VAE with a Pro model?)")
    c = wav2vec2.config
    if (c.num_hidden_layers, c.hidden_size) != (cfg.dit.audio_layers, cfg.dit.audio_width):
        raise Wav2Vec2LoadError(
            f"{files.wav2vec2} has {c.num_hidden_layers} layers x {c.hidden_size}, but {files.model_dir} was trained on "
            f"{cfg.dit.audio_layers} x {cfg.dit.audio_width} (facebook/wav2vec2-base-960h)")


def _device_and_dtype(opts: ModelOptions) -> tuple[torch.device, torch.dtype]:
    device = torch.device(opts.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    table = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    dtype = table[opts.dtype] if opts.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    return device, dtype


def build(opts: ModelOptions) -> FlashHeadModel:
    """Load the model for the options (FlashHeadFilesError listing every missing file before anything loads)."""
    _refuse_unsupported(opts)
    files, preset = _files(opts)
    cfg = FlashHeadConfig.from_file(files.model_dir)
    device, dtype = _device_and_dtype(opts)
    vae = load_ltx_chunk_vae(files.vae, device) if preset == LITE else load_wan_chunk_vae(files.vae, device)
    wav2vec2 = load_wav2vec2(files.wav2vec2, device=device)
    _check_pair(cfg, vae, wav2vec2, files)
    dit, report = load_flashhead_dit(cfg, files.model_dir, device=device, dtype=dtype)
    if opts.compile:
        dit.compile_blocks()
    chunk = chunk_settings(opts, preset)
    size = opts.size or SIZE
    lat = cfg.latent_hw(*size)  # a size the VAE and patching cannot make is refused here, not at the first chunk
    if lat[0] % cfg.dit.patch_size[1] or lat[1] % cfg.dit.patch_size[2]:
        step = (cfg.vae_stride[1] * cfg.dit.patch_size[1], cfg.vae_stride[2] * cfg.dit.patch_size[2])
        raise ValueError(f"size {size[0]}x{size[1]} must be a multiple of {step[0]}x{step[1]} (VAE stride x patch)")
    tiny = "tiny random" in (files.model_dir / "config.json").read_text()
    description = f"{TINY_NOTE if tiny else ''}{KIND_LABELS[preset]}, preset {preset}"
    log.info("%s: %d DiT tensors loaded in %.1f s, %dx%d, %s", description, report.loaded, report.seconds, *size, dtype)
    return FlashHeadModel(dit, vae, wav2vec2, cfg, chunk, size, preset, description)


def run_follower(opts: ModelOptions) -> int:
    raise ValueError("FlashHead runs on one GPU: --sequence-parallel is not supported for its presets")
