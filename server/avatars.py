"""The avatar store: built-in avatars plus a folder of uploaded images, with safe upload checks.

Uploads are untrusted bytes: the type is sniffed from magic bytes (never the file name or the
Content-Type), the pixel count is checked from the header before anything is decoded
(decompression bombs), EXIF orientation is applied, and the image is re-encoded as PNG under a
validated name, so nothing a client sends can reach outside the folder or be served back as-is.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import re
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from streaming.generator import Avatar

from .encode import encode_jpeg

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
UPLOAD_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
THUMBNAIL_SIDE = 160


class AvatarError(Exception):
    """code: bad_name | unknown_avatar | not_an_image | unsupported_type | too_large."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class UploadLimits:
    """max_side: uploads larger than this (longest side, pixels) are downscaled when stored."""

    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_side: int = 2048


@dataclass(frozen=True)
class AvatarInfo:
    name: str
    builtin: bool
    width: int
    height: int
    kind: str  # "image" | "video"

    def as_json(self) -> dict:
        return {"name": self.name, "builtin": self.builtin, "width": self.width, "height": self.height,
                "kind": self.kind}


def validate_name(name: object) -> str:
    """Avatar names are 1-64 characters of [A-Za-z0-9_-]: safe as file names, nothing else gets in."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise AvatarError("bad_name", f"invalid avatar name {str(name)[:80]!r}: use 1-64 characters from A-Z a-z 0-9 _ -")
    return name


def sniff_image_type(head: bytes) -> str | None:
    """'png' | 'jpeg' | 'webp' from the first bytes; 'other-image' for image types we refuse; None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:6] in (b"GIF87a", b"GIF89a") or head[:2] == b"BM" or head[:4] in (b"II*\x00", b"MM\x00*"):
        return "other-image"
    if head[4:12] in (b"ftypavif", b"ftypheic", b"ftypheix", b"ftypmif1"):
        return "other-image"
    return None


def decode_image(data: bytes, limits: UploadLimits) -> np.ndarray:
    """Untrusted PNG/JPEG/WebP bytes -> RGB uint8 [H, W, 3], EXIF-rotated, at most max_side px a side."""
    kind = sniff_image_type(data[:16])
    if kind is None:
        raise AvatarError("not_an_image", "the upload is not an image: send PNG, JPEG or WebP bytes")
    if kind == "other-image":
        raise AvatarError("unsupported_type", "unsupported image type: send PNG, JPEG or WebP")
    if len(data) > limits.max_bytes:
        raise AvatarError("too_large", f"image is {len(data)} bytes; the limit is {limits.max_bytes}")
    try:
        with Image.open(io.BytesIO(data), formats=["PNG", "JPEG", "WEBP"]) as im:
            w, h = im.size
            if w * h > limits.max_pixels:
                raise AvatarError(
                    "too_large", f"image is {w}x{h} = {w * h} pixels; the limit is {limits.max_pixels}"
                )
            if w < 16 or h < 16:
                raise AvatarError("not_an_image", f"image is {w}x{h}; an avatar needs at least 16x16 pixels")
            small = _load_reduced(im, limits.max_side)
        rgb = _to_rgb(small, limits.max_side)
    except AvatarError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own check, at twice our limit: quote ours
        raise AvatarError("too_large", f"image has too many pixels; the limit is {limits.max_pixels}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise AvatarError("not_an_image", f"could not decode the image ({exc}); is the file complete?") from exc
    return rgb


def _load_reduced(im: Image.Image, max_side: int) -> Image.Image:
    """Decode at the smallest size that still has `max_side` pixels on the longest side, so a large
    upload exists at full size once at most: JPEG decodes at 1/2, 1/4 or 1/8 scale inside libjpeg
    (`draft`); PNG and WebP must decode whole and are box-reduced at once, before any other copy."""
    im.seek(0)
    w, h = im.size
    if max(w, h) > max_side:
        s = max_side / max(w, h)
        im.draft(None, (max(1, math.ceil(w * s)), max(1, math.ceil(h * s))))  # a no-op but for JPEG
    im.load()
    if im.mode not in ("L", "LA", "RGB", "RGBA"):  # e.g. P, 1, CMYK, I;16: reduce/resize want these
        im = im.convert("RGBA" if _has_alpha(im) else "RGB")
    factor = max(im.size) // max_side
    return im.reduce(factor) if factor >= 2 else im.copy()


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)


def _to_rgb(im: Image.Image, max_side: int) -> np.ndarray:
    """At most `max_side` a side (area average), EXIF orientation applied, transparency flattened on
    white, as RGB uint8; resized first, so every later copy is small."""
    w, h = im.size
    if max(w, h) > max_side:
        s = max_side / max(w, h)
        im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BOX)
    im = ImageOps.exif_transpose(im)
    if _has_alpha(im):
        rgba = im.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        flat.alpha_composite(rgba)
        im = flat
    return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))


def thumbnail_jpeg(avatar: Avatar, side: int = THUMBNAIL_SIDE) -> bytes:
    img = avatar.frames[0]
    h, w = img.shape[:2]
    scale = min(1.0, side / max(h, w))
    if scale < 1:
        img = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return encode_jpeg(img, 80)


class AvatarStore:
    """Built-ins (name -> loader) and uploads (`upload_dir/NAME.png|jpg|jpeg|webp`). Thread-safe.

    Pillow's global MAX_IMAGE_PIXELS is set to the upload pixel limit so its own bomb check agrees.
    """

    def __init__(
        self,
        builtins: Mapping[str, Callable[[], Avatar]],
        upload_dir: Path | None,
        default: str,
        limits: UploadLimits | None = None,
        cache_size: int = 16,
    ) -> None:
        self.limits = limits or UploadLimits()
        self.builtins = dict(builtins)
        self.upload_dir = Path(upload_dir) if upload_dir is not None else None
        self.default = default
        self._cache: OrderedDict[str, Avatar] = OrderedDict()
        self._thumbs: dict[str, bytes] = {}
        self._cache_size = cache_size
        self._lock = threading.RLock()
        self._upload_thread: ThreadPoolExecutor | None = None
        Image.MAX_IMAGE_PIXELS = self.limits.max_pixels
        # Pillow warns between 1x and 2x that limit; decode_image refuses those itself (413).
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
        if default not in self.builtins and self._upload_path(default) is None:
            raise ValueError(
                f"default avatar {default!r} is neither built in ({', '.join(sorted(self.builtins)) or 'none'}) "
                f"nor an image in {self.upload_dir}"
            )

    # ------------------------------------------------------------------ lookup
    def _upload_path(self, name: str) -> Path | None:
        if self.upload_dir is None or not NAME_RE.fullmatch(name):
            return None
        for suffix in UPLOAD_SUFFIXES:
            p = self.upload_dir / f"{name}{suffix}"
            if p.is_file():
                return p
        return None

    def names(self) -> list[str]:
        names = set(self.builtins)
        if self.upload_dir is not None and self.upload_dir.is_dir():
            for p in self.upload_dir.iterdir():
                if p.suffix.lower() in UPLOAD_SUFFIXES and NAME_RE.fullmatch(p.stem) and p.is_file():
                    names.add(p.stem)
        return sorted(names)

    def get(self, name: str) -> Avatar:
        """The avatar called `name` (decoded once, then cached)."""
        validate_name(name)
        with self._lock:
            if name in self._cache:
                self._cache.move_to_end(name)
                return self._cache[name]
        if name in self.builtins:
            avatar = self.builtins[name]()
        else:
            path = self._upload_path(name)
            if path is None:
                raise AvatarError("unknown_avatar", f"no avatar called {name!r}; GET /api/avatars lists them")
            avatar = Avatar(name, decode_image(path.read_bytes(), self.limits)[None])
        with self._lock:
            self._cache[name] = avatar
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return avatar

    def info(self, name: str) -> AvatarInfo:
        a = self.get(name)
        w, h = a.size
        return AvatarInfo(name, name in self.builtins, w, h, "video" if a.is_video else "image")

    def list_info(self) -> list[AvatarInfo]:
        out = []
        for name in self.names():
            try:
                out.append(self.info(name))
            except AvatarError as exc:
                log.warning("skipping avatar %s: %s", name, exc.message)
        return out

    def thumbnail(self, name: str) -> bytes:
        with self._lock:
            if name in self._thumbs:
                return self._thumbs[name]
        data = thumbnail_jpeg(self.get(name))
        with self._lock:
            self._thumbs[name] = data
        return data

    # ------------------------------------------------------------------ upload
    async def upload(self, name: str, data: bytes) -> AvatarInfo:
        """`save_upload` off the event loop, on one thread for every upload: one decode at a time, each
        reusing the memory the last one freed. (On a pool, glibc would keep a freed heap per thread and
        each thread its own peak: four concurrent 36 MP PNGs grew the process by ~1 GiB, not ~0.3.)"""
        if self._upload_thread is None:
            self._upload_thread = ThreadPoolExecutor(1, thread_name_prefix="avatar_upload")
        return await asyncio.get_running_loop().run_in_executor(self._upload_thread, self.save_upload, name, data)

    def close(self) -> None:
        """Stop the upload thread (app cleanup)."""
        if self._upload_thread is not None:
            self._upload_thread.shutdown(wait=False, cancel_futures=True)
            self._upload_thread = None

    def save_upload(self, name: str, data: bytes) -> AvatarInfo:
        """Validate and store an uploaded image as `upload_dir/NAME.png` (replacing an older upload)."""
        validate_name(name)
        if name in self.builtins:
            raise AvatarError("bad_name", f"{name!r} is a built-in avatar; pick another name")
        if self.upload_dir is None:
            raise AvatarError("bad_name", "uploads are disabled: the server has no avatar folder (--avatar-dir)")
        rgb = decode_image(data, self.limits)
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        target = self.upload_dir / f"{name}.png"
        tmp = self.upload_dir / f".{name}.png.part"
        ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if not ok:
            raise AvatarError("not_an_image", "could not re-encode the image")
        tmp.write_bytes(buf.tobytes())
        for suffix in UPLOAD_SUFFIXES:
            old = self.upload_dir / f"{name}{suffix}"
            if suffix != ".png" and old.is_file():
                old.unlink()
        tmp.replace(target)
        avatar = Avatar(name, rgb[None])
        with self._lock:
            self._cache[name] = avatar
            self._thumbs.pop(name, None)
        log.info("avatar %s uploaded (%dx%d)", name, rgb.shape[1], rgb.shape[0])
        return AvatarInfo(name, False, rgb.shape[1], rgb.shape[0], "image")
