"""The CLIP ViT-H/14 vision tower (open-clip XLM-RoBERTa-large CLIP) that gives InfiniteTalk its image tokens.

InfiniteTalk reads the transformer output after all blocks except the last (no post-norm, no head):
[B, 257, 1280] for a 224x224 image. So this module builds only the blocks it runs, and the loader
drops what the real checkpoint holds beyond that (`textual.*`, `log_scale`, `visual.head`,
`visual.post_norm.*`, the last block). Keys keep the checkpoint's `visual.` prefix.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.weights.clip_layouts import is_transformers_clip, transformers_clip_to_reference
from model.weights.keycheck import key_mismatches

logger = logging.getLogger(__name__)

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class CLIPVisionConfig:
    """Vision transformer sizes plus the pixel normalisation it was trained with.

    pre_norm: LayerNorm after the embeddings (then the patch conv has no bias).
    post_norm: blocks normalise the branch outputs (x + norm(f(x))) instead of the inputs.
    activation: "gelu" (exact erf) or "quick_gelu" (x * sigmoid(1.702 x)).
    out_dim / pool_type: describe the unused head; kept so reference configs round-trip.
    """

    image_size: int = 224
    patch_size: int = 14
    dim: int = 1280
    mlp_ratio: float = 4.0
    num_heads: int = 16
    num_layers: int = 32
    norm_eps: float = 1e-5
    pre_norm: bool = True
    post_norm: bool = False
    activation: str = "gelu"
    pool_type: str = "token"
    out_dim: int = 1024
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.activation not in ("gelu", "quick_gelu"):
            raise ValueError(f"activation {self.activation!r} not supported; use 'gelu' or 'quick_gelu'")
        if self.pool_type not in ("token", "token_fc"):
            raise ValueError(f"pool_type {self.pool_type!r} not supported: the features need a class token")
        if self.num_layers < 1:
            raise ValueError("num_layers must be >= 1")

    @property
    def num_tokens(self) -> int:
        """Class token + patches: 257 for ViT-H/14 at 224."""
        return 1 + (self.image_size // self.patch_size) ** 2

    @property
    def mlp_dim(self) -> int:
        return int(self.dim * self.mlp_ratio)

    @classmethod
    def vit_h14(cls) -> CLIPVisionConfig:
        """The vision half of models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth."""
        return cls()

    @classmethod
    def from_reference_kwargs(cls, kwargs: Mapping[str, Any]) -> CLIPVisionConfig:
        """Build from reference `VisionTransformer(**kwargs)` keywords + `normalize_mean` / `normalize_std`.

        Dropout rates are accepted and ignored (inference only).
        """
        ignored = {"attn_dropout", "proj_dropout", "embedding_dropout"}
        names = {
            "image_size", "patch_size", "dim", "mlp_ratio", "num_heads", "num_layers", "norm_eps",
            "pre_norm", "post_norm", "activation", "pool_type", "out_dim",
        }
        unknown = set(kwargs) - names - ignored - {"normalize_mean", "normalize_std"}
        if unknown:
            raise ValueError(f"unknown CLIP vision config keys {sorted(unknown)}")
        args: dict[str, Any] = {k: kwargs[k] for k in names if k in kwargs}
        if "mlp_ratio" in args:
            args["mlp_ratio"] = float(args["mlp_ratio"])
        if "normalize_mean" in kwargs:
            args["mean"] = tuple(float(v) for v in kwargs["normalize_mean"])
        if "normalize_std" in kwargs:
            args["std"] = tuple(float(v) for v in kwargs["normalize_std"])
        if args.get("out_dim") is None:
            args["out_dim"] = int(args.get("dim", 1280))
        return cls(**args)


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the module dtype (as the reference does)."""

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)


class QuickGELU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class SelfAttention(nn.Module):
    """Multi-head self-attention; `to_qkv` output is laid out (3, heads, head_dim)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.to_qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        # x: [B, L, C] -> [B, L, C]
        b, s, c = x.shape
        n = self.num_heads
        # [B, L, 3, n, d] -> q, k, v: [B, n, L, d]
        q, k, v = self.to_qkv(x).view(b, s, 3, n, c // n).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, s, c))


class VisionBlock(nn.Module):
    """Transformer block: attention and MLP branches, pre-norm (default) or post-norm."""

    def __init__(self, cfg: CLIPVisionConfig) -> None:
        super().__init__()
        self.post_norm = cfg.post_norm
        self.norm1 = FP32LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.attn = SelfAttention(cfg.dim, cfg.num_heads)
        self.norm2 = FP32LayerNorm(cfg.dim, eps=cfg.norm_eps)
        act: nn.Module = nn.GELU() if cfg.activation == "gelu" else QuickGELU()
        self.mlp = nn.Sequential(nn.Linear(cfg.dim, cfg.mlp_dim), act, nn.Linear(cfg.mlp_dim, cfg.dim))

    def forward(self, x: Tensor) -> Tensor:
        # x: [B, L, C] -> [B, L, C]
        if self.post_norm:
            x = x + self.norm1(self.attn(x))
            return x + self.norm2(self.mlp(x))
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """Patch embedding + class token + positions (+ pre-norm) + `num_blocks` blocks; no post-norm / head."""

    def __init__(self, cfg: CLIPVisionConfig, num_blocks: int) -> None:
        super().__init__()
        self.patch_embedding = nn.Conv2d(
            3, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=not cfg.pre_norm
        )
        self.cls_embedding = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embedding = nn.Parameter(torch.zeros(1, cfg.num_tokens, cfg.dim))
        self.pre_norm = FP32LayerNorm(cfg.dim, eps=cfg.norm_eps) if cfg.pre_norm else None
        self.transformer = nn.Sequential(*[VisionBlock(cfg) for _ in range(num_blocks)])

    def forward(self, pixels: Tensor, num_blocks: int | None = None) -> Tensor:
        # pixels: [B, 3, S, S] -> [B, 1 + (S/patch)^2, C]
        x = self.patch_embedding(pixels).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_embedding.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        x = x + self.pos_embedding.to(x.dtype)
        if self.pre_norm is not None:
            x = self.pre_norm(x)
        for block in self.transformer[:num_blocks]:
            x = block(x)
        return x


class CLIPVisionEncoder(nn.Module):
    """Image -> CLIP tokens, as InfiniteTalk uses them (output of all blocks but the last).

    include_last_block: also build the last block so `forward(..., all_blocks=True)` can run it
    (debugging / parity only; the real checkpoint then must provide it).
    """

    def __init__(self, cfg: CLIPVisionConfig, include_last_block: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.feature_blocks = cfg.num_layers - 1
        self.visual = VisionTransformer(cfg, cfg.num_layers if include_last_block else self.feature_blocks)

    def required_keys(self) -> set[str]:
        """State-dict keys this module loads (everything else in a CLIP checkpoint is ignored)."""
        return set(self.state_dict().keys())

    @classmethod
    def from_state_dict(
        cls,
        cfg: CLIPVisionConfig,
        state_dict: Mapping[str, Tensor],
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        include_last_block: bool = False,
    ) -> CLIPVisionEncoder:
        """Build without initialising weights and load the needed keys of a full or partial CLIP file."""
        with torch.device("meta"):
            enc = cls(cfg, include_last_block=include_last_block)
        sd = select_clip_vision_weights(enc, state_dict)
        enc.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in sd.items()}, assign=True)
        return enc.eval().requires_grad_(False)

    def preprocess(self, image: Tensor) -> Tensor:
        """image [B, 3, T, H, W] (or [B, 3, H, W]) in [-1, 1] -> float32 pixels [B*T, 3, S, S].

        Bicubic resize to S x S (align_corners False, no antialias), then to [0, 1] by x*0.5+0.5, then
        (x - mean) / std per channel.
        """
        if image.ndim == 5:
            image = image.transpose(1, 2).flatten(0, 1)
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"preprocess expects [B, 3, T, H, W] or [B, 3, H, W], got {list(image.shape)}")
        s = self.cfg.image_size
        x = F.interpolate(image.float(), size=(s, s), mode="bicubic", align_corners=False)
        x = x * 0.5 + 0.5
        mean = torch.tensor(self.cfg.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.cfg.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def forward(self, pixels: Tensor, all_blocks: bool = False) -> Tensor:
        """pixels [B, 3, S, S] (from `preprocess`) -> features [B, 1 + (S/patch)^2, dim] in the module dtype."""
        n = len(self.visual.transformer)
        if all_blocks and n < self.cfg.num_layers:
            raise ValueError("all_blocks=True needs CLIPVisionEncoder(cfg, include_last_block=True)")
        with torch.no_grad():
            return self.visual(pixels.to(self.visual.pos_embedding.dtype), n if all_blocks else self.feature_blocks)

    def encode_image(self, image: Tensor) -> Tensor:
        """image [B, 3, 1, H, W] in [-1, 1] -> features [B, 257, 1280] for the real tower."""
        return self(self.preprocess(image))


_UNUSED_CLIP_KEYS = re.compile(r"^(textual\..*|log_scale|visual\.head(\..*)?|visual\.post_norm\..*)$")
_BLOCK_KEY = re.compile(r"^visual\.transformer\.(\d+)\.")


def select_clip_vision_weights(
    encoder: CLIPVisionEncoder, state_dict: Mapping[str, Tensor], source: str = "state dict"
) -> dict[str, Tensor]:
    """Pick the tensors `encoder` needs from a CLIP state dict, checking names and shapes.

    Ignores what InfiniteTalk never runs: `textual.*`, `log_scale`, `visual.head`, `visual.post_norm.*`
    and blocks the encoder did not build (< num_layers). Any other extra or missing key is an error.
    A `transformers`-layout file (ComfyUI's `clip_vision_h.safetensors`) is renamed first.
    """
    if is_transformers_clip(state_dict):
        logger.info("CLIP vision weights in %s use the transformers (ComfyUI) layout; renaming", source)
        state_dict = transformers_clip_to_reference(state_dict)
    expected = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}
    built = len(encoder.visual.transformer)

    def unused(k: str) -> bool:  # the text tower, the head, and blocks past "all but the last"
        m = _BLOCK_KEY.match(k)
        return bool(_UNUSED_CLIP_KEYS.match(k)) or bool(m and built <= int(m.group(1)) < encoder.cfg.num_layers)

    mismatch = key_mismatches(expected, state_dict, ignore=unused)
    if mismatch:
        raise ValueError(
            f"CLIP vision weights in {source} do not fit the config ({mismatch.describe()}). "
            "Expected the reference's CLIP keys ('visual.transformer.N...') or a transformers CLIP vision "
            "model ('vision_model.encoder.layers.N...', as ComfyUI's clip_vision_h); check num_layers / dim."
        )
    return {k: state_dict[k] for k in expected}


def load_clip_vision(
    path: str | Path,
    cfg: CLIPVisionConfig | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> CLIPVisionEncoder:
    """Load the vision tower from a full CLIP file (models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth
    or a safetensors copy with the same keys, or ComfyUI's clip_vision_h.safetensors); any text tower in
    it is skipped."""
    from model.vae.loading import load_state_dict_file

    cfg = cfg or CLIPVisionConfig.vit_h14()
    sd = load_state_dict_file(path)
    logger.info("loading CLIP vision tower from %s (%d tensors in file) to %s %s", path, len(sd), device, dtype)
    try:
        return CLIPVisionEncoder.from_state_dict(cfg, sd, device=device, dtype=dtype)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
