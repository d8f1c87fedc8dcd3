"""The FlashHead chunk loop against the reference's `FlashHeadPipeline.generate` (loop_case vectors of every
set: FLASHHEAD_GOLDEN and FLASHHEAD_VECTORS).

The vectors ran two chunks with a pass-through VAE (decode(z) = z, encode(v) = v) and colour
correction off, so the latent arithmetic is checked alone: each step teacher-forced (1e-4) and the
two chunks free-running through `FlashHeadChunker` (1e-3). Sizes come from the set's files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor

from model.dit.flashhead import FlashHeadDiT
from model.flashhead import FlashHeadConfig, load_flashhead_dit
from model.flashhead.loop import ChunkSettings, FlashHeadChunker, denoise_chunk, draw_chunk_noise
from model.sampling import x0_renoise_step

from ..helpers.flashhead_sets import chunk_count, chunk_noise

STEP_ATOL = 1e-4
END_ATOL = 1e-3


class PassThroughVAE:
    """The vectors' VAE: latents are the 'video'; `latents` latent frames are `latents` frames."""

    def encode(self, video: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return video

    def decode(self, latent: Tensor) -> Tensor:
        return latent

    def frames_for_latents(self, latents: int) -> int:
        return latents


@pytest.fixture(scope="module")
def setup(flashhead_set_dir: Path) -> tuple[FlashHeadDiT, FlashHeadConfig, dict]:
    raw = json.loads((flashhead_set_dir / "dit_config.json").read_text())
    cfg = FlashHeadConfig.from_kwargs(raw)
    dit, _ = load_flashhead_dit(cfg, flashhead_set_dir / "dit_weights.safetensors", dtype=torch.float32)
    g = load_file(flashhead_set_dir / "loop_case.safetensors")
    g["motion_latents"] = raw["motion_latents"]
    g["frame_num"] = raw["frame_num"]
    return dit, cfg, g


def test_the_schedule_is_flashtalks(setup) -> None:
    _, _, g = setup
    torch.testing.assert_close(ChunkSettings().sampler.timesteps(), g["timesteps"], atol=1e-4, rtol=0)


def test_every_step_teacher_forced(setup) -> None:
    dit, _, g = setup
    ts = g["timesteps"]
    steps = ts.numel() - 1
    for c in range(chunk_count(g, "final")):
        tm = g[f"in.motion{c}"].shape[1]
        for k in range(steps):
            x = g[f"step{c}.{k}"]
            torch.testing.assert_close(x[:, :tm], g[f"in.motion{c}"], atol=0, rtol=0)
            with torch.no_grad():
                flow = dit(x[None], ts[k].reshape(1), g[f"in.audio{c}"], g["in.ref_latent"][None])[0]
            torch.testing.assert_close(flow, g[f"flow{c}.{k}"], atol=STEP_ATOL, rtol=0, msg=lambda m, c=c, k=k: f"flow{c}.{k}: {m}")
            nxt = x0_renoise_step(x, g[f"flow{c}.{k}"], ts[k], ts[k + 1], g[f"noise{c}.{k}"])
            nxt[:, :tm] = g[f"in.motion{c}"]
            want = g[f"step{c}.{k + 1}"] if k + 1 < steps else g[f"final{c}"]
            torch.testing.assert_close(nxt, want, atol=STEP_ATOL, rtol=0, msg=lambda m, c=c, k=k: f"update {c}.{k}: {m}")


def test_one_chunk_traced_against_the_reference(setup) -> None:
    dit, _, g = setup
    seen: dict[str, Tensor] = {}

    def trace(name: str, k: int, t: Tensor) -> None:
        seen[f"{name}0.{k}" if name != "final" else "final0"] = t.clone()

    denoise_chunk(dit, g["in.ref_latent"], g["in.audio0"][0], g["in.motion0"], chunk_noise(g, 0), g["timesteps"], trace)
    for name, got in seen.items():
        torch.testing.assert_close(got, g[name], atol=END_ATOL, rtol=0, msg=lambda m, n=name: f"{n}: {m}")
    assert "final0" in seen and "flow0.0" in seen


def test_chunks_free_running_end_to_end(setup) -> None:
    dit, _, g = setup
    settings = ChunkSettings(frame_num=g["frame_num"], motion_latents=g["motion_latents"], colour_strength=0.0)
    chunker = FlashHeadChunker(dit, PassThroughVAE(), g["in.ref_latent"][:, 0], settings, seed=0,
                               ref_latent=g["in.ref_latent"])
    for c in range(chunk_count(g, "final")):
        torch.testing.assert_close(chunker.motion, g[f"in.motion{c}"], atol=END_ATOL, rtol=0)
        video = chunker.chunk(g[f"in.audio{c}"][0], noise=chunk_noise(g, c))
        torch.testing.assert_close(video, g[f"final{c}"], atol=END_ATOL, rtol=0, msg=lambda m, c=c: f"chunk {c}: {m}")
    assert chunker.motion.shape[1] == g["motion_latents"]


def test_draws_follow_the_reference_order(setup) -> None:
    """One generator per stream: each chunk takes its initial noise, then one draw per step (the last too)."""
    dit, _, g = setup
    settings = ChunkSettings(frame_num=g["frame_num"], motion_latents=g["motion_latents"], colour_strength=0.0)
    chunker = FlashHeadChunker(dit, PassThroughVAE(), g["in.ref_latent"][:, 0], settings, seed=7,
                               ref_latent=g["in.ref_latent"])
    shape = tuple(g["noise0.init"].shape)
    gen = torch.Generator().manual_seed(7)
    expected = [torch.randn(shape, generator=gen) for _ in range(2 * (1 + settings.sampler.steps))]
    drawn: list[Tensor] = []
    for _ in range(2):
        n = draw_chunk_noise(chunker.generator, shape, settings.sampler.steps)
        drawn += [n.init, *n.steps]
    for got, want in zip(drawn, expected, strict=True):
        torch.testing.assert_close(got, want, atol=0, rtol=0)
