"""SoulX-FlashHead Lite against the reference's own code (vectors of tools/flashhead_vectors.py, read from
FLASHHEAD_VECTORS; sizes from the set's lite_config.json and ltx_vae/config.json).

LTX-Video VAE: the release's diffusers naming loads; encode's posterior (mean, std) and its sample with the
reference's recorded draw, and the decode, at 1e-4. Lite loop (the LTX VAE, colour correction 1.0): each
chunk teacher-forced from the reference's motion latents at 1e-3, and the chunks free running from the
reference image at 1e-2; the posterior draws of every encode are the reference's recorded ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from model.flashhead import FlashHeadConfig, load_flashhead_dit
from model.flashhead.loop import ChunkSettings, FlashHeadChunker
from model.flashhead.vae import LtxChunkVAE, load_ltx_chunk_vae
from model.vae.ltx_loading import load_ltx_vae

from ..helpers.flashhead_sets import chunk_count, chunk_noise

VAE_ATOL = 1e-4
CHUNK_ATOL = 1e-3
END_ATOL = 1e-2


class RecordedDraws:
    """The LTX chunk VAE with the reference's recorded posterior draws, in the order the loop encodes."""

    def __init__(self, vae: LtxChunkVAE, draws: list[torch.Tensor]) -> None:
        self.vae, self.draws = vae, list(draws)

    def encode(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.vae.encode(video, noise=self.draws.pop(0))

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent)

    def frames_for_latents(self, latents: int) -> int:
        return self.vae.frames_for_latents(latents)


def test_ltx_vae_encode_and_decode_match_the_reference(flashhead_vectors_dir: Path) -> None:
    vae = load_ltx_vae(flashhead_vectors_dir / "ltx_vae")
    g = load_file(flashhead_vectors_dir / "ltx_vae_case.safetensors")
    video = g["in.video"][None]
    mean, std = vae.posterior(video)
    torch.testing.assert_close(mean[0], g["out.mean"], atol=VAE_ATOL, rtol=0)
    torch.testing.assert_close(std[0], g["out.std"].expand_as(std[0]), atol=VAE_ATOL, rtol=0)
    latent = vae.encode(video, noise=g["draw"][None])[0]
    torch.testing.assert_close(latent, g["out.latent"], atol=VAE_ATOL, rtol=0)
    assert (latent - vae.encode(video)[0]).abs().max() > 1e-3  # the sample is not the mean: the draw matters
    torch.testing.assert_close(vae.decode(g["out.latent"][None])[0], g["out.decoded"], atol=VAE_ATOL, rtol=0)


@pytest.fixture(scope="module")
def lite(flashhead_vectors_dir: Path):
    raw = json.loads((flashhead_vectors_dir / "lite_config.json").read_text())
    cfg = FlashHeadConfig.from_kwargs(raw)
    dit, _ = load_flashhead_dit(cfg, flashhead_vectors_dir / "lite_dit_weights.safetensors", dtype=torch.float32)
    vae = load_ltx_chunk_vae(flashhead_vectors_dir / "ltx_vae")
    g = load_file(flashhead_vectors_dir / "lite_case.safetensors")
    settings = ChunkSettings(frame_num=raw["frame_num"], motion_latents=raw["motion_latents"], colour_strength=1.0)
    return dit, vae, g, settings


def _draws(g: dict, first: int = 0) -> list[torch.Tensor]:
    return [g["draw.ref"]] * (first == 0) + [g[f"draw{c}"] for c in range(first, chunk_count(g, "draw"))]


def test_lite_geometry_and_reference_latent(lite) -> None:
    dit, vae, g, settings = lite
    assert vae.temporal_stride == 8 and vae.spatial_stride == 32
    chunker = FlashHeadChunker(dit, RecordedDraws(vae, _draws(g)), g["in.ref_image"], settings, seed=0)
    assert chunker.motion_frames == 9
    torch.testing.assert_close(chunker.ref_latent, g["in.ref_latent"], atol=VAE_ATOL, rtol=0)
    torch.testing.assert_close(chunker.motion, g["in.motion0"], atol=VAE_ATOL, rtol=0)


def test_each_lite_chunk_teacher_forced(lite) -> None:
    dit, vae, g, settings = lite
    chunks = chunk_count(g, "video")
    for c in range(chunks):
        recorded = RecordedDraws(vae, [g[f"draw{c}"]])
        chunker = FlashHeadChunker(dit, recorded, g["in.ref_image"], settings, seed=0, ref_latent=g["in.ref_latent"])
        chunker.motion = g[f"in.motion{c}"].clone()
        video = chunker.chunk(g[f"in.audio{c}"][0], noise=chunk_noise(g, c))
        torch.testing.assert_close(video, g[f"video{c}"], atol=CHUNK_ATOL, rtol=0, msg=lambda m, c=c: f"chunk {c}: {m}")
        want = g[f"in.motion{c + 1}"] if c + 1 < chunks else g["motion_after"]
        torch.testing.assert_close(chunker.motion, want, atol=CHUNK_ATOL, rtol=0, msg=lambda m, c=c: f"motion {c}: {m}")


def test_lite_chunks_free_running_from_the_reference_image(lite) -> None:
    dit, vae, g, settings = lite
    chunker = FlashHeadChunker(dit, RecordedDraws(vae, _draws(g)), g["in.ref_image"], settings, seed=0)
    for c in range(chunk_count(g, "video")):
        video = chunker.chunk(g[f"in.audio{c}"][0], noise=chunk_noise(g, c))
        torch.testing.assert_close(video, g[f"video{c}"], atol=END_ATOL, rtol=0, msg=lambda m, c=c: f"chunk {c}: {m}")
    torch.testing.assert_close(chunker.motion, g["motion_after"], atol=END_ATOL, rtol=0)
