"""Build the project's modules from the golden reference weight files (read every size from them)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from model.clip_vision import CLIPVisionConfig, load_clip_vision
from model.dit import DiTConfig, InfiniteTalkDiT
from model.infinitetalk import InfiniteTalkPipeline, TextConditioning
from model.vae import VAEConfig, load_wan_vae


def golden_dit(golden: Path) -> InfiniteTalkDiT:
    cfg = DiTConfig.from_reference_kwargs(json.loads((golden / "dit_config.json").read_text()))
    with torch.device("meta"):
        dit = InfiniteTalkDiT(cfg)
    dit.load_state_dict(load_file(golden / "dit_weights.safetensors"), strict=True, assign=True)
    return dit.eval().requires_grad_(False)


def golden_vae(golden: Path):
    cfg = VAEConfig.from_reference_kwargs(json.loads((golden / "vae_config.json").read_text()))
    return load_wan_vae(golden / "vae_weights.safetensors", cfg)


def loop_clip(golden: Path):
    cfg = CLIPVisionConfig.from_reference_kwargs(json.loads((golden / "loop" / "clip_config.json").read_text()))
    return load_clip_vision(golden / "loop" / "clip_weights.safetensors", cfg)


def loop_pipeline(golden: Path, case: str) -> InfiniteTalkPipeline:
    inputs = load_file(golden / "loop" / f"{case}.inputs.safetensors")
    text = TextConditioning(inputs["context"], inputs["context_null"])
    return InfiniteTalkPipeline(golden_dit(golden), golden_vae(golden), loop_clip(golden), text)
