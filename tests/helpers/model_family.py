"""Random tiny VAEs and DiTs of the golden family, and the approximation statistics the model tests bound.

The split-VAE, bf16 and fp8 tests bound how far an approximation may move an output. Measured on
one golden file such a bound may hold only for that file; these builders make other members of the
same family (the golden generator's initialisation, tests/helpers/golden_init.py, at other seeds
and sizes: with the public VAE config and seed 1245 it reproduces the golden VAE bit for bit), and
tests/bounds/model_bounds_sweep.py measures the statistics over many of them.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from model.dit import DiTConfig, InfiniteTalkDiT
from model.dit.fp8_linear import quantize_linears_
from model.vae import VAEConfig, WanVAE
from model.vae.split import DECODE_HALO, ENCODE_HALO
from model.vae.tiles import Tile, plan_tiles

from .golden_init import golden_init_


def golden_vae_config(golden: Path, **sizes) -> VAEConfig:
    """The golden VAE's config with other sizes (dim, num_res_blocks, ...)."""
    kwargs = json.loads((golden / "vae_config.json").read_text())
    return VAEConfig.from_reference_kwargs({**kwargs, **sizes})


def random_vae(cfg: VAEConfig, seed: int) -> WanVAE:
    return golden_init_(WanVAE(cfg), seed).eval().requires_grad_(False)


def smooth_clip(seed: int, frames: int = 5, size: int = 128) -> torch.Tensor:
    """A smooth random clip [1, 3, frames, size, size] in [-1, 1] (bicubic up from 8x8 noise)."""
    g = torch.Generator().manual_seed(seed)
    video = F.interpolate(torch.rand(1, 3 * frames, 8, 8, generator=g), size=(size, size), mode="bicubic")
    return (video.view(1, 3, frames, size, size) * 1.8 - 0.9).clamp(-1, 1)


def stitched(run: Callable[[Tile], torch.Tensor], tiles: list[Tile], full_like: torch.Tensor,
             scale: int) -> torch.Tensor:
    """What the split gives (tested exactly in test_vae_split): each tile run alone, its halo cropped, put in place."""
    out = torch.empty_like(full_like)
    for t in tiles:
        part = run(t)
        out[..., t.rows.place(scale), t.cols.place(scale)] = part[..., t.rows.owned(scale), t.cols.owned(scale)]
    return out


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(4.0 / float(((a - b) ** 2).mean()))  # peak-to-peak 2 ([-1, 1])


@torch.no_grad()
def split_closeness(vae: WanVAE, video: torch.Tensor, world: int = 2, decode_halo: int = DECODE_HALO,
                    encode_halo: int = ENCODE_HALO) -> tuple[float, float]:
    """(decode PSNR dB, encode relative error) of the tiled VAE against the whole, over `world` tiles."""
    s = vae.cfg.spatial_stride
    z = vae.encode(video)
    whole = vae.decode(z)
    tiles = plan_tiles(*z.shape[-2:], world, decode_halo)
    dec = stitched(lambda t: vae.decode(z[..., t.rows.run(), t.cols.run()]), tiles, whole, s)
    tiles = plan_tiles(*z.shape[-2:], world, encode_halo)
    enc = stitched(lambda t: vae.encode(video[..., t.rows.run(s), t.cols.run(s)]), tiles, z, 1)
    return psnr(dec, whole), float((enc - z).norm() / z.norm())


@torch.no_grad()
def vae_bf16_decode_error(vae: WanVAE, z: torch.Tensor) -> float:
    """Mean |bf16 decode - fp32 decode| (pixels in [-1, 1]) under inference mode, as test_vae_parity checks it."""
    low = WanVAE.from_state_dict(vae.cfg, vae.state_dict(), dtype=torch.bfloat16)
    ref = vae.decode(z)
    with torch.inference_mode():
        out = low.decode(z)
    return float((out - ref).abs().mean())


def random_dit(seed: int, **sizes) -> tuple[DiTConfig, InfiniteTalkDiT]:
    """DiTConfig.tiny() with other sizes, weights from `init_random_weights_(seed)` (the tests' tiny DiTs)."""
    cfg = dataclasses.replace(DiTConfig.tiny(), **sizes)
    return cfg, InfiniteTalkDiT(cfg).init_random_weights_(seed=seed).eval().requires_grad_(False)


def relative_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got - ref).norm() / ref.norm())


@torch.no_grad()
def dit_bf16_error(model: InfiniteTalkDiT, inputs: dict) -> tuple[float, int, float]:
    """(relative error of the bf16 model vs float32, tokens whose speaker routing (the argmax over the
    attention maps, every block) flipped, and the share of routed tokens that flipped)."""
    low = copy.deepcopy(model).to(torch.bfloat16)
    ca: dict[str, torch.Tensor] = {}
    cb: dict[str, torch.Tensor] = {}
    ref, out = model(**inputs, capture=ca), low(**inputs, capture=cb)
    maps = [k for k in ca if k.endswith("x_ref_attn_map")]
    flips = sum(int((ca[k].argmax(1) != cb[k].float().argmax(1)).sum()) for k in maps)
    routed = sum(ca[k][:, 0].numel() for k in maps)
    return relative_error(out, ref), flips, flips / max(routed, 1)


@torch.no_grad()
def dit_fp8_error(model: InfiniteTalkDiT, inputs: dict, activations: str = "row") -> float:
    """Relative error of the DiT with fp8 block linears (emulated on CPU) vs float32."""
    q = copy.deepcopy(model)
    quantize_linears_(q, activations=activations)
    return relative_error(q(**inputs), model(**inputs))


def dit_inputs(cfg: DiTConfig, b: int = 1, speakers: int = 1, seed: int = 0, frames: int = 2, h: int = 4,
               w: int = 6) -> dict:
    """Random DiT inputs like tests/model/test_dit.make_inputs (speaker k owns a vertical stripe)."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(speakers + 1, h, w)
    cols = torch.arange(w)
    for k in range(speakers):
        masks[k, :, cols % (speakers + 1) == k] = 1
    masks[speakers] = (masks[:speakers].sum(0) == 0).float()
    return dict(
        x=torch.randn(b, cfg.out_dim, frames, h, w, generator=g),
        t=torch.rand(b, generator=g) * 1000,
        context=torch.randn(b, 5, cfg.text_dim, generator=g),
        clip_fea=torch.randn(b, cfg.clip_tokens, cfg.clip_dim, generator=g),
        y=torch.randn(b, cfg.in_dim - cfg.out_dim, frames, h, w, generator=g),
        audio=torch.randn(b, speakers, cfg.video_frames(frames), cfg.audio_window, cfg.audio_layers,
                          cfg.audio_width, generator=g),
        ref_target_masks=masks,
    )
