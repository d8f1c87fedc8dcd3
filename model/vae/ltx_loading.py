"""Load SoulX-FlashHead Lite's `VAE_LTX/` (diffusers `AutoencoderKLLTXVideo` folder: config.json +
diffusion_pytorch_model.safetensors) into `LtxVAE`.

The diffusers names group blocks per level (`encoder.down_blocks.{i}.resnets / downsamplers.0 / conv_out`,
`encoder.mid_block`, `decoder.mid_block`, `decoder.up_blocks.{j}.conv_in / upsamplers.0 / resnets`); the
reference renames them onto its flat block list (`VAE_KEYS_RENAME_DICT`, written out for the 0.9.0 sizes).
Here the same renaming is derived from the block plan, so tiny configs of the same family load too.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

from .ltx_config import LtxVAEConfig
from .ltx_vae import LtxVAE

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
_STATS = {"latents_mean": "latents_mean", "latents_std": "latents_std"}
_RENAMES = (("conv_shortcut.conv.", "conv_shortcut."), ("norm3.", "norm3.norm."))  # inside a residual block


def _diffusers_prefixes(cfg: LtxVAEConfig) -> dict[str, str]:
    """diffusers block prefix -> this port's (`encoder.down_blocks.{p}.`, `decoder.up_blocks.{p}.`)."""
    plan = cfg.encoder_plan()
    n, levels = len(plan), len(cfg.block_out_channels)
    out: dict[str, str] = {}
    pos = 0
    for i in range(levels):
        j = levels - 1 - i  # the decoder's up block mirroring encoder level i
        for kind, enc, dec in (("res", f"down_blocks.{i}.resnets.", f"up_blocks.{j}.resnets."),
                               ("down", f"down_blocks.{i}.downsamplers.0.", f"up_blocks.{j}.upsamplers.0."),
                               ("widen", f"down_blocks.{i}.conv_out.", f"up_blocks.{j}.conv_in.")):
            if pos < n - 1 and plan[pos][0] == kind:
                res = "res_blocks." if kind == "res" else ""
                out[f"encoder.{enc}"] = f"encoder.down_blocks.{pos}.{res}"
                out[f"decoder.{dec}"] = f"decoder.up_blocks.{n - 1 - pos}.{res}"
                pos += 1
    out["encoder.mid_block.resnets."] = f"encoder.down_blocks.{n - 1}.res_blocks."
    out["decoder.mid_block.resnets."] = "decoder.up_blocks.0.res_blocks."
    return out


def diffusers_to_port(state: dict[str, Tensor], cfg: LtxVAEConfig) -> dict[str, Tensor]:
    """Rename a diffusers `AutoencoderKLLTXVideo` state dict onto `LtxVAE`; unknown keys are kept as they
    are (so the strict load names them)."""
    prefixes = sorted(_diffusers_prefixes(cfg).items(), key=lambda kv: -len(kv[0]))
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        new = _STATS.get(key, key)
        for old, mine in prefixes:
            if key.startswith(old):
                rest = key[len(old):]
                for a, b in _RENAMES:
                    rest = rest.replace(a, b)
                new = mine + rest
                break
        out[new] = value
    return out


def port_to_diffusers(state: dict[str, Tensor], cfg: LtxVAEConfig) -> dict[str, Tensor]:
    """The inverse of `diffusers_to_port` (the tiny release writer stores the release's naming)."""
    inverse = {mine: old for old, mine in _diffusers_prefixes(cfg).items()}
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        new = key
        for mine, old in sorted(inverse.items(), key=lambda kv: -len(kv[0])):
            if key.startswith(mine):
                rest = key[len(mine):]
                for a, b in _RENAMES:
                    rest = rest.replace(b, a)
                new = old + rest
                break
        out[new] = value
    return out


def load_ltx_vae(folder: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> LtxVAE:
    """`LtxVAE` from a diffusers folder (config.json checked for the supported variant, weights loaded strictly)."""
    folder = Path(folder)
    cfg = LtxVAEConfig.from_file(folder)
    files = sorted(folder.glob("diffusion_pytorch_model*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no {WEIGHTS_FILE}")
    state: dict[str, Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    vae = LtxVAE(cfg)
    mapped = diffusers_to_port(state, cfg)
    own = vae.state_dict()
    missing = sorted(set(own) - set(mapped))
    unexpected = sorted(set(mapped) - set(own))
    wrong = sorted(k for k in set(own) & set(mapped) if own[k].shape != mapped[k].shape)
    if missing or unexpected or wrong:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:6]) + (f" (+{len(keys) - 6})" if len(keys) > 6 else "")
        raise ValueError(f"{folder}: the weights do not fit its config.json ({cfg}): "
                         + "; ".join(f"{what}: {show(keys)}" for what, keys in
                                     (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys))
    vae.load_state_dict(mapped, strict=True)
    logger.info("LTX-Video VAE from %s: %d tensors, stride %dx%d, %d latent channels", folder, len(state),
                cfg.temporal_stride, cfg.spatial_stride, cfg.latent_channels)
    return vae.to(device=device, dtype=dtype).eval().requires_grad_(False)
