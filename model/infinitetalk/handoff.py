"""Decoded frames to host uint8 without stalling the GPU queue.

On CUDA the float -> uint8 conversion runs on the device and the copy to (pinned) host memory is
queued on a copy stream with an event, so the caller can queue the next chunk's decode before it
waits for this chunk's pixels: the consumer (pacer, encoder) handles chunk i while the GPU decodes
chunk i+1. On CPU everything is immediate. Either way the pixels are exactly `video_to_frames`'.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import Tensor

from model.vae import video_to_frames

log = logging.getLogger(__name__)


class PendingFrames:
    """uint8 frames [n, H, W, 3] that may still be on their way to host memory."""

    def __init__(self, host: Tensor, event: torch.cuda.Event | None = None) -> None:
        self._host = host
        self._event = event

    def __len__(self) -> int:
        return self._host.shape[0]

    def ready(self) -> bool:
        return self._event is None or self._event.query()

    def frames(self) -> np.ndarray:
        """Wait for the copy (CUDA) and return the frames."""
        if self._event is not None:
            self._event.synchronize()
            self._event = None
        return self._host.numpy()


class FrameHandoff:
    """Starts device -> host copies of decoded video; one per device."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self._stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    def submit(self, video: Tensor) -> PendingFrames:
        """video [3, n, H, W] in [-1, 1] (any float dtype, on self.device) -> PendingFrames."""
        u8 = video_to_frames(video)  # [n, H, W, 3] uint8, computed where the video is
        if self._stream is None or not u8.is_cuda:
            return PendingFrames(u8.cpu())
        self._stream.wait_stream(torch.cuda.current_stream(u8.device))
        with torch.cuda.stream(self._stream):
            host = torch.empty(u8.shape, dtype=torch.uint8, pin_memory=True)
            host.copy_(u8, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self._stream)
        u8.record_stream(self._stream)  # keep the device buffer alive until the copy has run
        return PendingFrames(host, event)
