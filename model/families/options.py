"""`ModelOptions`: every option of the model, defined once (the CLI's flags are generated from it).

Light on purpose (stdlib only): `infinitetalk-live --help` reads it without importing torch.
"""

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from model.options import option

TINY_RANDOM = "tiny-random"
"""The preset of the tiny random-weight model (written to a temporary folder; its video is noise)."""


def parse_size(text: str) -> tuple[int, int]:
    """"HEIGHTxWIDTH" -> (height, width)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HEIGHTxWIDTH, e.g. 448x448, got {text!r}") from None
    return h, w


def parse_lora(text: str) -> tuple[Path, float]:
    """"PATH[:STRENGTH]" -> (path, strength), strength 1 when left out."""
    path, _, strength = text.partition(":")
    try:
        return Path(path), float(strength) if strength else 1.0
    except ValueError:
        raise argparse.ArgumentTypeError(f"--lora takes PATH[:STRENGTH], got {text!r}") from None


@dataclass(frozen=True)
class ModelOptions:
    """What to load and how to sample it. None = the preset's value (or the device's, for dtype).

    preset None: the default of the weights' kind ("infinitetalk" for the InfiniteTalk release,
    "flashtalk" for a SoulX-FlashTalk-14B folder).
    """

    # Which model.
    weights: Path | None = option(
        None, "folder with the InfiniteTalk release layout, SoulX-FlashTalk-14B or SoulX-FlashHead-1_3B (detected; see docs)")
    weights_config: Path | None = option(None, "JSON file naming every model file explicitly")
    preset: str | None = option(
        None, "generation settings: infinitetalk (default for InfiniteTalk weights), flashtalk (default for "
              "SoulX-FlashTalk-14B: 33-frame windows, 4 steps, 768x448), infinitetalk-lowlatency, "
              "infinitetalk-4step, tiny-random (a random tiny model: its video is noise), flashhead-pro / "
              "flashhead-lite (SoulX-FlashHead-1.3B, one GPU, 512x512; default for its folder)")
    verify_weights: Literal["full", "size", "off"] = option(
        "full", "check the weight files against weights.sha256.json (recorded at the first good load): "
                "full = sizes and sha256 (default), size = sizes only (fast), off")
    # Where and how fast.
    device: str | None = option(None, "cuda, cuda:1, cpu (default: cuda when available)")
    dtype: Literal["bf16", "fp16", "fp32"] | None = option(
        None, "DiT weights (default bf16 on CUDA, fp32 on CPU)")
    fp8: Literal["row", "tensor", "none"] | None = option(
        None, "fp8 DiT block linears: activations scaled per row or tensor (scaled matmuls on Ada/Hopper), "
              "or weight-only (none: memory, not speed)")
    compile: bool = option(False, "torch.compile the DiT blocks")
    cuda_graphs: bool = option(False, "replay DiT forwards from CUDA graphs")
    sequence_parallel: bool = option(
        False, "under torchrun: split the DiT over every process (Ulysses); rank 0 serves, the others follow")
    vae_split: bool = option(
        False, "with --sequence-parallel: split VAE encode/decode into spatial tiles over the processes "
               "(SoulX-FlashTalk's multi-GPU VAE; faster, approximate at the tile seams)")
    vae_split_halo: int | None = option(
        None, "with --vae-split: latent positions (8 pixels each) decoded around each tile and cropped "
              "(default 2, the reference's; more: smaller seams, more work; encode uses half)", metavar="N")
    teacache: float | None = option(
        None, "skip DiT steps whose input barely changed (e.g. 0.2; pays with many steps)", metavar="THRESHOLD")
    # What each window is.
    size: tuple[int, int] | None = option(
        None, "generation size HEIGHTxWIDTH (default: 480p bucket of the avatar)", parse=parse_size)
    frames: int | None = option(None, "frames per window, 4n+1 (preset default)")
    motion_frames: int | None = option(None, "frames carried into the next window, 4n+1")
    steps: int | None = option(None, "sampling steps")
    shift: float | None = option(None, "timestep shift")
    text_scale: float | None = option(None, "text guidance scale (1 = off)")
    audio_scale: float | None = option(None, "audio guidance scale (1 = off)")
    colour_strength: float | None = option(None, "colour correction strength 0..1 (default 1)")
    seed: int = option(0, "noise seed (same audio + seed -> same video)")
    loras: tuple[tuple[Path, float], ...] = option(
        (), "LoRA merged at load, e.g. the lightx2v 4-step LoRA (repeatable)", flag="--lora", parse=parse_lora,
        repeat=True, metavar="PATH[:STRENGTH]")
    prompt: str | None = option(None, "text prompt (needs the umT5 encoder in the weights folder)")
    negative_prompt: str | None = option(None, "negative prompt (default: the reference's)")

    def __post_init__(self) -> None:
        if self.vae_split and not self.sequence_parallel:
            raise ValueError("--vae-split splits the VAE over the processes of --sequence-parallel (under "
                             "torchrun); add --sequence-parallel")
        if self.vae_split_halo is not None and self.vae_split_halo < 0:
            raise ValueError(f"--vae-split-halo must be >= 0 latent positions, got {self.vae_split_halo}")
