"""Per-video-frame audio windows: each frame sees the embeddings of its neighbours f-2 .. f+2.

The DiT's audio input for a window of F frames starting at frame `start` is
emb[clamp(f + d, 0, rows-1)] for f in start..start+F-1 and d in -2..2 -> [F, 5, layers, hidden].
"""

from __future__ import annotations

import torch

AUDIO_WINDOW = 5
"""Width of the per-frame window (the DiT's `audio_window`)."""


def window_indices(num_frames: int, start: int, total_rows: int, window: int = AUDIO_WINDOW) -> torch.Tensor:
    """Rows of the embedding each frame reads: int64 [num_frames, window], clamped to [0, total_rows-1]."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be odd and >= 1, got {window}")
    if total_rows < 1:
        raise ValueError("total_rows must be >= 1")
    half = window // 2
    frames = torch.arange(start, start + num_frames, dtype=torch.int64)
    offsets = torch.arange(-half, half + 1, dtype=torch.int64)
    return (frames[:, None] + offsets[None, :]).clamp(0, total_rows - 1)


def audio_windows(emb: torch.Tensor, start: int, frames: int, window: int = AUDIO_WINDOW) -> torch.Tensor:
    """Windowed embeddings for `frames` video frames from `start`: emb [S, layers, hidden] ->
    [frames, window, layers, hidden]. Stack speakers on a new leading axis for the DiT ([H, F, 5, L, D])."""
    idx = window_indices(frames, start, emb.shape[0], window).to(emb.device)
    return emb[idx]
