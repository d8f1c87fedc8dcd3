"""Avatars: the built-in portrait(s) and decoding user images or looping videos into `Avatar`s.

Images are decoded with Pillow (EXIF orientation applied, converted to RGB); anything Pillow
cannot read is tried as a video with PyAV (frames capped, fps kept for looping). Large sources are
downscaled so the longest side is at most `max_side` (backends resize to their output anyway).
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np

from streaming.generator import DEFAULT_FPS, Avatar

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent / "assets" / "avatars"

BUILTIN_AVATARS: dict[str, str] = {
    "astronaut": "astronaut.jpg",
}
"""name -> file under streaming/assets/avatars (licences in docs/avatars.md)."""

DEFAULT_AVATAR = "astronaut"
MAX_FRAMES = 250
"""Video avatars keep at most this many frames (10 s at 25 fps); the clip loops."""
MAX_SIDE = 1280


def builtin_avatar_path(name: str) -> Path:
    """Path of a built-in avatar file; ValueError naming the choices for an unknown name."""
    try:
        return ASSETS / BUILTIN_AVATARS[name]
    except KeyError:
        raise ValueError(f"unknown built-in avatar {name!r}; choose one of {sorted(BUILTIN_AVATARS)} "
                         "or pass an image/video file") from None


def _fit(rgb: np.ndarray, max_side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return rgb
    import cv2

    s = max_side / max(h, w)
    return cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def _decode_image(data: bytes, max_side: int, max_frames: int) -> tuple[np.ndarray, float] | None:
    """Pillow decode -> ([N, H, W, 3] uint8, fps), or None if Pillow does not recognise the data."""
    from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

    try:
        im = Image.open(io.BytesIO(data))
        n = getattr(im, "n_frames", 1)
        if n <= 1:
            im = ImageOps.exif_transpose(im)
            return _fit(np.asarray(im.convert("RGB")), max_side)[None], float(DEFAULT_FPS)
        # Animated GIF / WebP / APNG: treat like a looping video.
        frames = [_fit(np.asarray(f.convert("RGB")), max_side)
                  for _, f in zip(range(max_frames), ImageSequence.Iterator(im), strict=False)]
        ms = float(im.info.get("duration") or 1000.0 / DEFAULT_FPS)
        return np.stack(frames), 1000.0 / max(ms, 10.0)
    except UnidentifiedImageError:
        return None
    except (OSError, ValueError, SyntaxError) as e:  # recognised but truncated/corrupt
        raise ValueError(f"avatar image could not be decoded ({e}); re-export it as PNG or JPEG") from e


def _decode_video(data: bytes, max_side: int, max_frames: int) -> tuple[np.ndarray, float]:
    import av

    try:
        with av.open(io.BytesIO(data)) as container:
            if not container.streams.video:
                raise ValueError("the file has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else float(DEFAULT_FPS)
            frames = []
            for frame in container.decode(stream):
                frames.append(_fit(frame.to_ndarray(format="rgb24"), max_side))
                if len(frames) >= max_frames:
                    log.info("video avatar truncated to its first %d frames", max_frames)
                    break
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise ValueError(f"avatar is neither an image Pillow can read nor a video PyAV can decode ({e}); "
                         "use a PNG/JPEG portrait or an MP4/WebM clip") from e
    if not frames:
        raise ValueError("avatar video has no decodable frames; use a PNG/JPEG portrait or an MP4/WebM clip")
    if len({f.shape for f in frames}) > 1:
        frames = [frames[0]] + [f if f.shape == frames[0].shape else _resize_like(f, frames[0]) for f in frames[1:]]
    return np.stack(frames), fps


def _resize_like(f: np.ndarray, ref: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.resize(f, (ref.shape[1], ref.shape[0]), interpolation=cv2.INTER_AREA)


def load_avatar(source: str | Path | bytes, name: str | None = None, *, max_frames: int = MAX_FRAMES,
                max_side: int = MAX_SIDE) -> Avatar:
    """Decode an image or video (a path or the file's bytes) into an `Avatar`.

    Still images give one frame; videos and animated images keep up to `max_frames` frames and
    their frame rate. Raises ValueError with what to do when the data cannot be decoded.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        data, label = bytes(source), name or "avatar"
    else:
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"avatar file {path} not found")
        data, label = path.read_bytes(), name or path.stem
    if not data:
        raise ValueError(f"avatar {label!r} is empty; pass a PNG/JPEG portrait or an MP4/WebM clip")
    decoded = _decode_image(data, max_side, max_frames)
    if decoded is None:
        decoded = _decode_video(data, max_side, max_frames)
    frames, fps = decoded
    avatar = Avatar(name=label, frames=np.ascontiguousarray(frames, dtype=np.uint8), fps=fps)
    log.info("avatar %r: %d frame(s) %dx%d at %.2f fps", label, frames.shape[0], *avatar.size, fps)
    return avatar


def default_avatar() -> Avatar:
    """The built-in portrait (NASA photo of astronaut Eileen Collins, public domain)."""
    return load_avatar(builtin_avatar_path(DEFAULT_AVATAR), name=DEFAULT_AVATAR)
