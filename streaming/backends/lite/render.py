"""The frame renderer: jaw/lip warp, mouth interior, eyelid warp and head sway on one RGB frame.

Every rig precomputes its pixel grids and weights once per session (`open_session`); per frame it
only combines them with a few scalars (opening, width, blink, pose) and calls cv2.remap on a small
region, so a 512x512 frame costs a few milliseconds on one core. Warps are backward maps (each
output pixel says where in the source it comes from) built to be monotone, so nothing folds over.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from streaming.backends.lite.face import FaceGeometry

_F32 = np.float32


def _smoothstep(u: np.ndarray) -> np.ndarray:
    u = np.clip(u, 0.0, 1.0)
    return (u * u * (3.0 - 2.0 * u)).astype(_F32)


def _roi(x0: float, y0: float, x1: float, y1: float, w: int, h: int) -> tuple[int, int, int, int]:
    """Float bounds -> integer (x0, y0, x1, y1) clipped to a w x h frame."""
    return max(0, math.floor(x0)), max(0, math.floor(y0)), min(w, math.ceil(x1)), min(h, math.ceil(y1))


class MouthRig:
    """Opens the jaw: upper lip up a little, lower lip and chin down, dark interior in the gap.

    Around the lip line y = my, in ROI pixels, for opening A pixels at the mouth centre:
      lens(x) = lip gap profile across the mouth (1 at the centre, 0 at the corners),
      U = 0.3 A lens, L = 0.7 A lens   (upper / lower lip travel),
      C = 0.7 A jaw(x)                  (chin travel; wider than the mouth, so cheeks stretch).
    Rows above the gap sample from below (lip moves up, fading out by the nose); rows in the gap
    sample the lip line itself (then get the dark fill); rows below sample from above by a travel
    that blends from L at the lip to C at the chin and fades out down the neck.
    """

    def __init__(self, geom: FaceGeometry, frame_w: int, frame_h: int, mouth_open: float, width_gain: float):
        fw, fh = geom.width, geom.height
        self.mx, self.my = geom.mouth
        self.mw = geom.mouth_half_width
        self.amax = mouth_open * fh
        self.width_gain = width_gain
        chin = geom.chin_y
        self.x0, self.y0, x1, y1 = _roi(self.mx - 0.62 * fw, self.my - 0.27 * fh, self.mx + 0.62 * fw,
                                        chin + 0.32 * fh, frame_w, frame_h)
        xs = np.arange(self.x0, x1, dtype=_F32)
        ys = np.arange(self.y0, y1, dtype=_F32)
        self.X, self.Y = np.meshgrid(xs, ys)  # [h, w] absolute pixel coordinates
        self.dx = xs - self.mx  # [w]
        self.dy = (ys - self.my)[:, None]  # [h, 1]
        u = np.clip(np.abs(self.dx) / (0.5 * fw), 0.0, 1.0)
        self.jaw = (0.5 * (1.0 + np.cos(np.pi * u))).astype(_F32)  # [w]
        above = ys < self.my
        self.fade_up = np.where(above, _smoothstep(1.0 - (self.my - ys) / (0.22 * fh)), 1.0).astype(_F32)[:, None]
        self.ramp = _smoothstep((ys - self.my) / max(chin - self.my, 1.0))[:, None]
        self.fade_down = (1.0 - _smoothstep((ys - chin) / (0.28 * fh)))[:, None]
        # Lip widening: magnify around the mouth, weight decays over ~1.4 mouth half-widths.
        g = np.exp(-(self.dx[None, :] / (1.4 * self.mw)) ** 2 - (self.dy / (0.9 * self.mw)) ** 2)
        self.widen = (g * self.dx[None, :]).astype(_F32)
        self._dark = np.array([22, 6, 8], _F32)
        self._lip = np.array([95, 35, 38], _F32)
        self._teeth = np.array([222, 214, 204], _F32)

    def apply(self, img: np.ndarray, opening: float, width: float) -> None:
        """Warp `img` (RGB uint8 [H, W, 3]) in place for opening in [0, 1] and width in [-1, 1]."""
        a = opening * self.amax
        if a < 0.05 or self.X.size == 0:  # closed, or the face lies outside the frame
            return
        mw = self.mw * (1.0 + self.width_gain * width)
        lens = np.clip(1.0 - (self.dx / mw) ** 2, 0.0, 1.0) ** 0.7  # [w]
        up, low, chin = 0.3 * a * lens, 0.7 * a * lens, 0.7 * a * self.jaw  # [w]
        dy = self.dy
        gap_top, gap_bot = -up[None, :], low[None, :]  # [1, w]
        sy_above = self.Y + up * self.fade_up
        sy_gap = self.my - 0.5 + (dy - gap_top) / (up + low + 1e-3)
        sy_below = self.Y - (low + (chin - low) * self.ramp) * self.fade_down
        sy = np.where(dy < gap_top, sy_above, np.where(dy < gap_bot, sy_gap, sy_below)).astype(_F32)
        sx = (self.X - (self.width_gain * width * opening) * self.widen).astype(_F32)
        h, w = self.X.shape
        roi = img[self.y0: self.y0 + h, self.x0: self.x0 + w]
        warped = cv2.remap(img, sx, sy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        # Mouth interior: 1 px anti-aliased lens, darker towards the middle, a lip-coloured rim,
        # and the upper teeth as a light band under the upper lip once the gap is a few px tall.
        inside = np.minimum(dy - gap_top, gap_bot - dy)  # [h, w] distance into the gap, px
        gap = up + low  # [w]
        alpha = np.clip(inside + 0.5, 0.0, 1.0) * np.clip(gap / 2.0, 0.0, 1.0)
        rows = np.flatnonzero(alpha.max(axis=1) > 0)
        if rows.size:
            r0, r1 = rows[0], rows[-1] + 1
            al = alpha[r0:r1, :, None]
            depth = np.clip(inside[r0:r1] / (0.5 * gap + 1e-3), 0.0, 1.0)[..., None]
            color = self._lip + (self._dark - self._lip) * np.sqrt(depth)
            below_lip = (dy[r0:r1] - gap_top)  # [r, w] px under the upper lip
            teeth_h = 0.3 * gap
            teeth = (np.clip(teeth_h - below_lip + 0.5, 0.0, 1.0) * np.clip((gap - 2.5) / 3.0, 0.0, 0.85)
                     * np.clip(1.5 - 2.0 * np.abs(self.dx / mw), 0.0, 1.0))[..., None]
            color = color + teeth * (self._teeth - color)
            band = warped[r0:r1].astype(_F32)
            warped[r0:r1] = (band + al * (color - band) + 0.5).astype(np.uint8)
        roi[...] = warped


class EyeRig:
    """Blinks one eye: the upper lid slides down over the eye, carrying the lash line with it.

    Per column the eye spans [top, bot] around its centre (elliptic profile). For closure b the
    lid edge sits at lid = top + b (bot + margin - top). Rows above the lid sample upward by a
    travel growing as u^1.5 towards the lid (brow nearly still, lid skin stretched, the lash line
    lands on the lid edge); rows below the lid are the unchanged lower part of the eye.
    """

    def __init__(self, cx: float, cy: float, size: float, frame_w: int, frame_h: int):
        self.x0, self.y0, x1, y1 = _roi(cx - 0.55 * size, cy - 0.75 * size, cx + 0.55 * size, cy + 0.35 * size,
                                        frame_w, frame_h)
        xs = np.arange(self.x0, x1, dtype=_F32)
        ys = np.arange(self.y0, y1, dtype=_F32)
        self.X, self.Y = np.meshgrid(xs, ys)
        p = np.sqrt(np.clip(1.0 - ((xs - cx) / (0.34 * size)) ** 2, 0.0, 1.0)).astype(_F32)
        self.top = (cy - 0.13 * size * p)[None, :]
        self.reach = ((0.13 + 0.11) * size * p)[None, :]  # lid travel when fully shut (past the lower lid)
        self.rt = float(self.y0)

    def apply(self, img: np.ndarray, closure: float) -> None:
        """Warp `img` (RGB uint8 [H, W, 3]) in place for eyelid closure in [0, 1]."""
        if closure < 0.02 or self.X.size == 0:
            return
        y = self.Y
        travel = closure * self.reach  # [1, w]
        lid = self.top + travel
        u = np.clip((y - self.rt) / np.maximum(lid - self.rt, 1e-3), 0.0, 1.0)
        sy = np.where(y < lid, y - travel * u ** 1.5, y).astype(_F32)
        h, w = self.X.shape
        warped = cv2.remap(img, self.X, sy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        img[self.y0: self.y0 + h, self.x0: self.x0 + w] = warped


@dataclass(frozen=True)
class Pose:
    """Head pose offsets for one frame: roll in degrees, translation in pixels."""

    roll_deg: float
    dx: float
    dy: float


class HeadRig:
    """Moves the head (and a little of the shoulders) with a soft mask; the background stays put.

    The displacement is a small rotation about the neck plus a translation, weighted by a mask that
    is 1 on the head and fades to 0 around it, with 0.3 on the upper body. Because it is affine
    before masking, per-frame maps are just X - (c1*PX + c2*PY + c3*M) with PX, PY, M precomputed.
    """

    def __init__(self, geoms: list[FaceGeometry], frame_w: int, frame_h: int):
        xs = np.arange(frame_w, dtype=_F32)
        ys = np.arange(frame_h, dtype=_F32)
        X, Y = np.meshgrid(xs, ys)
        self.parts = []
        total = np.zeros((frame_h, frame_w), _F32)
        masks = []
        for g in geoms:
            bx, by, bw, bh = g.box
            cx, cy = bx + bw / 2, by + bh / 2
            r = np.sqrt(((X - cx) / (0.75 * bw)) ** 2 + ((Y - cy) / (0.95 * bh)) ** 2)
            head = 1.0 - _smoothstep((r - 1.0) / 1.0)
            body = 0.3 * _smoothstep((Y - g.chin_y) / (0.5 * bh)) * (1.0 - _smoothstep((np.abs(X - cx) - bw) / bw))
            masks.append((np.maximum(head, body).astype(_F32), (cx, g.chin_y)))
            total += masks[-1][0]
        norm = np.maximum(total, 1.0)  # overlapping heads share the weight
        nz = np.flatnonzero((total > 1e-3).any(axis=1))
        nzc = np.flatnonzero((total > 1e-3).any(axis=0))
        if nz.size == 0:
            nz, nzc = np.arange(frame_h), np.arange(frame_w)
        self.y0, self.y1, self.x0, self.x1 = int(nz[0]), int(nz[-1]) + 1, int(nzc[0]), int(nzc[-1]) + 1
        sl = (slice(self.y0, self.y1), slice(self.x0, self.x1))
        self.X, self.Y = X[sl].copy(), Y[sl].copy()
        for m, (px, py) in masks:
            m = (m / norm)[sl]
            self.parts.append(((self.X - px) * m, (self.Y - py) * m, np.ascontiguousarray(m)))

    def apply(self, img: np.ndarray, poses: list[Pose]) -> None:
        """Move each head of `img` (RGB uint8 [H, W, 3]) by its pose, in place."""
        mx, my = self.X.copy(), self.Y.copy()
        for (px, py, m), p in zip(self.parts, poses, strict=True):
            a = math.radians(p.roll_deg)
            c, s = math.cos(a) - 1.0, math.sin(a)
            # displacement d = (R - I)(x - pivot) + t, masked; backward map = x - d
            cv2.scaleAdd(px, -c, mx, mx)
            cv2.scaleAdd(py, s, mx, mx)
            cv2.scaleAdd(m, -p.dx, mx, mx)
            cv2.scaleAdd(px, -s, my, my)
            cv2.scaleAdd(py, -c, my, my)
            cv2.scaleAdd(m, -p.dy, my, my)
        moved = cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        img[self.y0: self.y1, self.x0: self.x1] = moved
