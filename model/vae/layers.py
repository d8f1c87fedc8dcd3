"""Building blocks of the causal VAE: the per-stream cache, causal conv, RMS norm, frame/batch reshapes."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)


class CausalCache:
    """Temporal context that causal layers carry from one chunk of a stream to the next.

    The VAE runs video in time chunks (encoder: frames [0], [1..4], [5..8], ...; decoder: one latent
    frame at a time). Each causal layer stores here only what its next chunk needs (a causal 3x3x3
    conv: its last 2 input frames; a temporal downsample: its last frame). A cache belongs to one
    stream: make a new one per encode/decode call; the modules themselves stay stateless.
    """

    def __init__(self) -> None:
        self._state: dict[int, object] = {}

    def get(self, layer: nn.Module) -> object | None:
        return self._state.get(id(layer))

    def put(self, layer: nn.Module, value: object) -> None:
        self._state[id(layer)] = value

    def nbytes(self) -> int:
        """Bytes held by cached tensors (to check the cache stays small)."""
        return sum(v.numel() * v.element_size() for v in self._state.values() if isinstance(v, Tensor))

    def __len__(self) -> int:
        return len(self._state)


class CausalConv3d(nn.Conv3d):
    """Conv3d that is causal in time: output frame t sees input frames t-k+1 .. t (zeros before frame 0).

    Stride 1, "same" padding in space. With a cache the conv continues seamlessly across chunks: the
    last k-1 input frames of the previous chunk stand in for the zero padding.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int, int]) -> None:
        k = (kernel_size,) * 3 if isinstance(kernel_size, int) else tuple(kernel_size)
        super().__init__(in_channels, out_channels, k, padding=(0, k[1] // 2, k[2] // 2))
        self.context_frames = k[0] - 1

    def forward(self, x: Tensor, cache: CausalCache | None = None) -> Tensor:
        # x: [B, C_in, T, H, W] -> [B, C_out, T, H, W]
        n = self.context_frames
        if n == 0:
            return super().forward(x)
        prev = cache.get(self) if cache is not None else None
        if prev is None:
            b, c, _, h, w = x.shape
            prev = x.new_zeros(b, c, n, h, w)
        x = torch.cat([prev, x], dim=2)
        if cache is not None:
            cache.put(self, x[:, :, -n:].clone())
        return super().forward(x)


class RMSNorm(nn.Module):
    """Channel RMS norm: x / ||x||_2 over channels * sqrt(C) * gamma (no mean subtraction, no bias).

    `gamma` is shaped to broadcast over [B, C, T, H, W] (video) or [B, C, H, W] (image), as in the
    checkpoint.
    """

    def __init__(self, dim: int, images: bool = False) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.empty((dim, 1, 1) if images else (dim, 1, 1, 1)))
        nn.init.ones_(self.gamma)

    def forward(self, x: Tensor) -> Tensor:
        # x: [B, C, ...] -> same
        return F.normalize(x, dim=1) * self.scale * self.gamma


def frames_to_batch(x: Tensor) -> Tensor:
    """[B, C, T, H, W] -> [B*T, C, H, W] so 2-D layers run on every frame."""
    b, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(b * t, c, h, w)


def batch_to_frames(x: Tensor, batch: int) -> Tensor:
    """[B*T, C, H, W] -> [B, C, T, H, W] (inverse of `frames_to_batch`)."""
    bt, c, h, w = x.shape
    return x.reshape(batch, bt // batch, c, h, w).transpose(1, 2)
