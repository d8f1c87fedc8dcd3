"""Find the face and place mouth, chin and eyes on it, using only detectors shipped in PyPI packages.

Detectors, in order: OpenCV's bundled Haar cascades (`cv2.data.haarcascades`, opencv 4.x),
scikit-image's bundled LBP cascade, then a centred default box with a warning. No weights are
ever downloaded. Landmarks are proportions of the face box (measured on frontal portraits), with
the lip line refined to the darkest row near the estimate and the eyes taken from the eye cascade
when it finds a plausible pair.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]
"""(x, y, w, h) in pixels."""

# Landmark positions as fractions of a Haar frontal-face box (x, y, w, h).
_MOUTH_Y = 0.81
_MOUTH_HALF_W = 0.20
_CHIN_Y = 1.04
_EYE_Y = 0.38
_EYE_X = (0.29, 0.71)
_EYE_SIZE = 0.30


@dataclass(frozen=True)
class FaceGeometry:
    """Where the animated parts of one face are, in pixels of the frame it was found on."""

    box: Box
    mouth: tuple[float, float]
    """(x, y) of the mouth centre on the lip line (where the lips part)."""
    mouth_half_width: float
    chin_y: float
    eyes: tuple[tuple[float, float, float], ...]
    """(cx, cy, size) per eye; size ~ eye-cascade box width."""
    source: str
    """Which detector produced the box: "haar", "lbp", "given" or "default"."""

    @property
    def height(self) -> float:
        return float(self.box[3])

    def mouth_box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) around the lips and the opening gap: where speech shows."""
        mx, my = self.mouth
        return (round(mx - 1.2 * self.mouth_half_width), round(my - 0.12 * self.height),
                round(mx + 1.2 * self.mouth_half_width), round(my + 0.2 * self.height))

    @property
    def width(self) -> float:
        return float(self.box[2])


@lru_cache(maxsize=8)
def _haar(name: str) -> cv2.CascadeClassifier:
    path = cv2.data.haarcascades + name
    c = cv2.CascadeClassifier(path)
    if c.empty():
        raise RuntimeError(f"could not load {path}; is opencv-python-headless 4.x installed (5.x lacks cascades)?")
    return c


def _largest(boxes: list[Box]) -> Box | None:
    return max(boxes, key=lambda b: b[2] * b[3]) if boxes else None


def _detect_haar(gray: np.ndarray, min_side: int) -> Box | None:
    for name in ("haarcascade_frontalface_default.xml", "haarcascade_frontalface_alt2.xml"):
        try:
            found = _haar(name).detectMultiScale(gray, 1.1, 5, minSize=(min_side, min_side))
        except (RuntimeError, cv2.error) as e:  # missing data files: fall through to the next detector
            log.warning("Haar cascade %s unavailable: %s", name, e)
            continue
        b = _largest([tuple(int(v) for v in f) for f in found])
        if b is not None:
            return b
    return None


def _detect_lbp(gray: np.ndarray, min_side: int) -> Box | None:
    try:
        from skimage.data import lbp_frontal_face_cascade_filename
        from skimage.feature import Cascade

        cascade = Cascade(lbp_frontal_face_cascade_filename())
        found = cascade.detect_multi_scale(
            img=gray, scale_factor=1.2, step_ratio=1, min_size=(min_side, min_side),
            max_size=(min(gray.shape), min(gray.shape)),
        )
    except Exception as e:  # any failure here just means "try the next fallback"
        log.warning("scikit-image LBP face cascade failed: %s", e)
        return None
    return _largest([(int(d["c"]), int(d["r"]), int(d["width"]), int(d["height"])) for d in found])


def default_box(width: int, height: int) -> Box:
    """A centred face box for portraits where no detector finds a face (upper-middle of the frame)."""
    side = int(0.4 * min(width, height))
    return (width - side) // 2, int(0.42 * height) - side // 2, side, side


def detect_face_box(rgb: np.ndarray, max_side: int = 640) -> tuple[Box, str]:
    """Largest frontal face in an RGB uint8 [H, W, 3] image -> ((x, y, w, h), detector name).

    Works on a copy downscaled to `max_side` for speed; never fails (falls back to a default box).
    """
    h, w = rgb.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    small = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA) if scale < 1 else rgb
    gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
    min_side = max(24, int(0.08 * min(gray.shape)))
    for name, fn in (("haar", _detect_haar), ("lbp", _detect_lbp)):
        b = fn(gray, min_side)
        if b is not None:
            x, y, bw, bh = (round(v / scale) for v in b)
            return (x, y, bw, bh), name
    log.warning("no face found in the %dx%d avatar; animating a centred default box. Use a frontal "
                "portrait (face at least ~10%% of the image) or pass speaker_boxes.", w, h)
    return default_box(w, h), "default"


def _refine_lip_line(gray: np.ndarray, mx: float, my: float, half_w: float, face_h: float) -> float:
    """Move the estimated lip line to the darkest row nearby (the gap between the lips)."""
    reach = max(2, round(0.07 * face_h))
    x0, x1 = round(mx - 0.6 * half_w), round(mx + 0.6 * half_w) + 1
    y0, y1 = round(my) - reach, round(my) + reach + 1
    if x0 < 0 or y0 < 0 or x1 > gray.shape[1] or y1 > gray.shape[0] or x1 - x0 < 3:
        return my
    rows = gray[y0:y1, x0:x1].astype(np.float32).mean(axis=1)
    rows = np.convolve(rows, np.ones(3, np.float32) / 3, mode="same")[1:-1]
    i = int(np.argmin(rows))
    if rows.max() - rows[i] < 12.0:  # no clear lip line: keep the geometric estimate
        return my
    return float(y0 + 1 + i)


def _detect_eyes(gray: np.ndarray, box: Box) -> tuple[tuple[float, float, float], ...] | None:
    x, y, w, h = box
    x, y = max(0, x), max(0, y)
    top = gray[y: y + h // 2 + h // 10, x: x + w]
    if top.size == 0:
        return None
    side = max(8, int(0.15 * w))
    try:
        found = _haar("haarcascade_eye.xml").detectMultiScale(top, 1.1, 4, minSize=(side, side))
    except (RuntimeError, cv2.error):
        return None
    eyes = [(x + ex + ew / 2, y + ey + eh / 2, float(ew)) for ex, ey, ew, eh in found if ew < 0.45 * w]
    left = [e for e in eyes if e[0] < x + 0.5 * w]
    right = [e for e in eyes if e[0] >= x + 0.5 * w]
    if not left or not right:
        return None
    le = max(left, key=lambda e: e[2])
    re = max(right, key=lambda e: e[2])
    if abs(le[1] - re[1]) > 0.12 * h or not (0.2 * h < le[1] - y < 0.55 * h):
        return None
    return le, re


def face_geometry(rgb: np.ndarray, box: Box | None = None, source: str = "given") -> FaceGeometry:
    """Detect (or take) the face box on an RGB uint8 frame and place the animated parts on it.

    `source` labels a given box (e.g. the detector that found it on the full-size source).
    """
    if box is None:
        box, source = detect_face_box(rgb)
    x, y, w, h = box
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    mx, half_w = x + 0.5 * w, _MOUTH_HALF_W * w
    my = _refine_lip_line(gray, mx, y + _MOUTH_Y * h, half_w, h)
    eyes = _detect_eyes(gray, box) if source != "default" else None
    if eyes is None:
        eyes = tuple((x + fx * w, y + _EYE_Y * h, _EYE_SIZE * w) for fx in _EYE_X)
    return FaceGeometry(
        box=box, mouth=(mx, my), mouth_half_width=half_w, chin_y=max(y + _CHIN_Y * h, my + 0.12 * h),
        eyes=eyes, source=source,
    )


def crop_box_for(size: tuple[int, int], out_size: tuple[int, int], face: Box | None) -> Box:
    """Largest crop of a (w, h) source with the output's aspect ratio, centred on the face if known.

    A square source for a square output is kept whole; otherwise the crop is slid along the long
    side so the face centre is as close to the crop centre as the image allows.
    """
    w, h = size
    ow, oh = out_size
    if w * oh > h * ow:  # source is wider than the output: crop width
        cw, ch = round(h * ow / oh), h
    else:
        cw, ch = w, round(w * oh / ow)
    fx, fy = (face[0] + face[2] / 2, face[1] + face[3] / 2) if face else (w / 2, h / 2)
    x0 = int(np.clip(round(fx - cw / 2), 0, w - cw))
    y0 = int(np.clip(round(fy - ch / 2), 0, h - ch))
    return x0, y0, cw, ch


def frame_to_output(rgb: np.ndarray, crop: Box, out_size: tuple[int, int]) -> np.ndarray:
    """Crop an RGB frame to `crop` and resize it to `out_size` (width, height)."""
    x0, y0, cw, ch = crop
    part = rgb[y0: y0 + ch, x0: x0 + cw]
    if (cw, ch) == tuple(out_size):
        return np.ascontiguousarray(part)
    interp = cv2.INTER_AREA if cw > out_size[0] else cv2.INTER_CUBIC
    return cv2.resize(part, out_size, interpolation=interp)


def map_box(box: Box, crop: Box, out_size: tuple[int, int]) -> Box:
    """A source-pixel box -> the same box in output pixels after `frame_to_output`."""
    sx, sy = out_size[0] / crop[2], out_size[1] / crop[3]
    return (round((box[0] - crop[0]) * sx), round((box[1] - crop[1]) * sy), round(box[2] * sx), round(box[3] * sy))
