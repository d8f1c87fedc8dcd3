"""The FlashHead audio path and the Pro loop with the real Wan VAE and colour correction, against the
reference's own code (vectors of tools/flashhead_vectors.py, read from FLASHHEAD_VECTORS; sizes from the set).

Audio: the stream mode's 8 s buffer through wav2vec2 (no loudness normalisation) and its last 33 frames'
clamped +-2 windows. Pro loop: each chunk teacher-forced from the reference's motion latents (1e-3 on the
decoded, colour-corrected frames), and the chunks free running from the reference image (looser bound).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from model.audio import load_wav2vec2, whole_clip_embedding
from model.flashhead import FlashHeadConfig, load_flashhead_dit
from model.flashhead.loop import ChunkSettings, FlashHeadChunker
from model.flashhead.vae import load_wan_chunk_vae
from streaming.features.rolling import RollingClipFeatures

from ..helpers.flashhead_sets import chunk_count, chunk_noise

CHUNK_ATOL = 1e-3
END_ATOL = 1e-2


@pytest.fixture(scope="module")
def audio(flashhead_vectors_dir: Path) -> tuple[torch.nn.Module, dict]:
    return load_wav2vec2(flashhead_vectors_dir / "wav2vec2"), load_file(flashhead_vectors_dir / "audio_case.safetensors")


def test_whole_buffer_features_match_the_reference(audio) -> None:
    model, g = audio
    emb = whole_clip_embedding(model, g["in.wave"].numpy(), loudness=False)
    torch.testing.assert_close(emb, g["out.embedding"], atol=1e-4, rtol=1e-4)


def test_rolling_window_of_a_chunk_matches_the_reference(audio) -> None:
    model, g = audio
    rolling = RollingClipFeatures(model, seconds=g["in.wave"].numel() / 16000, loudness=False)
    rolling.push(g["in.wave"].numpy())
    frames = g["out.windows"].shape[0]
    torch.testing.assert_close(rolling.window(frames), g["out.windows"], atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def pro(flashhead_vectors_dir: Path):
    raw = json.loads((flashhead_vectors_dir / "dit_config.json").read_text())
    cfg = FlashHeadConfig.from_kwargs(raw)
    dit, _ = load_flashhead_dit(cfg, flashhead_vectors_dir / "dit_weights.safetensors", dtype=torch.float32)
    vae = load_wan_chunk_vae(flashhead_vectors_dir / "vae.pth")
    g = load_file(flashhead_vectors_dir / "pro_case.safetensors")
    settings = ChunkSettings(frame_num=raw["frame_num"], motion_latents=raw["motion_latents"], colour_strength=1.0)
    return dit, vae, g, settings


def test_reference_latent_matches(pro) -> None:
    dit, vae, g, settings = pro
    chunker = FlashHeadChunker(dit, vae, g["in.ref_image"], settings, seed=0)
    torch.testing.assert_close(chunker.ref_latent, g["in.ref_latent"], atol=1e-4, rtol=0)
    torch.testing.assert_close(chunker.motion, g["in.motion0"], atol=1e-4, rtol=0)


def test_each_chunk_teacher_forced(pro) -> None:
    dit, vae, g, settings = pro
    chunker = FlashHeadChunker(dit, vae, g["in.ref_image"], settings, seed=0, ref_latent=g["in.ref_latent"])
    for c in range(chunk_count(g, "video")):
        chunker.motion = g[f"in.motion{c}"].clone()
        video = chunker.chunk(g[f"in.audio{c}"][0], noise=chunk_noise(g, c))
        torch.testing.assert_close(video, g[f"video{c}"], atol=CHUNK_ATOL, rtol=0, msg=lambda m, c=c: f"chunk {c}: {m}")
        want = g[f"in.motion{c + 1}"] if c + 1 < chunk_count(g, "video") else g["motion_after"]
        torch.testing.assert_close(chunker.motion, want, atol=CHUNK_ATOL, rtol=0, msg=lambda m, c=c: f"motion {c}: {m}")


def test_chunks_free_running_from_the_reference_image(pro) -> None:
    dit, vae, g, settings = pro
    chunker = FlashHeadChunker(dit, vae, g["in.ref_image"], settings, seed=0)
    for c in range(chunk_count(g, "video")):
        video = chunker.chunk(g[f"in.audio{c}"][0], noise=chunk_noise(g, c))
        torch.testing.assert_close(video, g[f"video{c}"], atol=END_ATOL, rtol=0, msg=lambda m, c=c: f"chunk {c}: {m}")
    torch.testing.assert_close(chunker.motion, g["motion_after"], atol=END_ATOL, rtol=0)
