"""Pick the generation size for a source frame and bring frames to it (the reference's buckets).

InfiniteTalk generates at one of a fixed set of sizes per resolution class, chosen by the source's
height/width ratio; the source is resized (bilinear, so that it covers the target) and centre-cropped.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

# height/width ratio -> (height, width). The 480p class ("infinitetalk-480") of the reference.
BUCKETS_480P: dict[float, tuple[int, int]] = {
    0.26: (320, 1216), 0.38: (384, 1024), 0.50: (448, 896), 0.67: (512, 768), 0.82: (576, 704),
    1.00: (640, 640), 1.22: (704, 576), 1.50: (768, 512), 1.86: (832, 448), 2.00: (896, 448),
    2.50: (960, 384), 2.83: (1088, 384), 3.60: (1152, 320), 3.80: (1216, 320), 4.00: (1280, 320),
}  # fmt: skip


def pick_bucket(height: int, width: int, buckets: dict[float, tuple[int, int]] = BUCKETS_480P) -> tuple[int, int]:
    """The (height, width) bucket whose ratio is closest to the source's height/width."""
    ratio = height / width
    key = min(buckets, key=lambda r: abs(r - ratio))
    return buckets[key]


def resize_and_crop(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [th, tw, 3]: bilinear resize to cover the target, then centre crop."""
    th, tw = size
    h, w = frame.shape[:2]
    if (h, w) == (th, tw):
        return frame
    scale = max(th / h, tw / w)
    rh, rw = math.ceil(scale * h), math.ceil(scale * w)
    resized = np.asarray(Image.fromarray(frame).resize((rw, rh), resample=Image.BILINEAR))
    top = int(round((rh - th) / 2.0))
    left = int(round((rw - tw) / 2.0))
    return np.ascontiguousarray(resized[top : top + th, left : left + tw])


def check_size(size: tuple[int, int], multiple: int = 16) -> tuple[int, int]:
    """Generation sizes must be multiples of 16 (VAE stride 8 x patch 2)."""
    h, w = size
    if h % multiple or w % multiple or h <= 0 or w <= 0:
        raise ValueError(f"size {h}x{w} must be positive multiples of {multiple} (e.g. 448x448, 480x832)")
    return h, w
