"""Avatar loading: built-in portrait, images with EXIF orientation, videos, and clear errors."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
from PIL import Image

from streaming.avatars import BUILTIN_AVATARS, builtin_avatar_path, default_avatar, load_avatar


def test_builtin_avatar_ships_small_and_decodes():
    for name in BUILTIN_AVATARS:
        p = builtin_avatar_path(name)
        assert p.is_file() and p.stat().st_size < 400_000
    a = default_avatar()
    assert a.frames.shape == (1, 512, 512, 3) and a.frames.dtype == np.uint8 and not a.is_video
    assert a.frames.std() > 20


def test_unknown_builtin_name_lists_the_choices():
    with pytest.raises(ValueError, match="astronaut"):
        builtin_avatar_path("nobody")


@pytest.mark.parametrize("data", [b"", b"hello, not a picture", b"\x89PNG\r\n\x1a\n" + bytes(64),
                                  b"\xff\xd8\xff\xe0" + bytes(64)])
def test_bad_bytes_raise_a_clear_value_error(data):
    with pytest.raises(ValueError, match="(?i)avatar"):
        load_avatar(data, "broken")


def test_missing_file_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_avatar(tmp_path / "nope.png")


def test_exif_orientation_is_honoured():
    # Stored 40 wide x 20 tall: left half red, right half blue. Orientation 6 = rotate 90 deg clockwise to view.
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20, 0] = 255
    stored[:, 20:, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, format="JPEG", quality=95, exif=exif)
    a = load_avatar(buf.getvalue(), "rotated")
    f = a.frames[0].astype(int)
    assert f.shape == (40, 20, 3)
    # After a clockwise turn the stored left (red) half is on top, the blue half at the bottom.
    assert f[:15, :, 0].mean() > 200 and f[:15, :, 2].mean() < 60
    assert f[-15:, :, 2].mean() > 200 and f[-15:, :, 0].mean() < 60


def test_grey_and_rgba_images_become_rgb(tmp_path):
    Image.fromarray(np.full((30, 30), 77, np.uint8)).save(tmp_path / "g.png")
    Image.fromarray(np.full((30, 30, 4), 200, np.uint8)).save(tmp_path / "rgba.png")
    for p in ("g.png", "rgba.png"):
        a = load_avatar(tmp_path / p)
        assert a.frames.shape == (1, 30, 30, 3) and a.name == p.split(".")[0]


def _tiny_mp4(frames: int, fps: int) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            img = np.full((48, 64, 3), 10 + 20 * i, np.uint8)
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return buf.getvalue()


def test_video_avatar_keeps_fps_and_caps_frames():
    a = load_avatar(_tiny_mp4(12, 10), "clip", max_frames=8)
    assert a.is_video and a.frames.shape == (8, 48, 64, 3) and a.fps == pytest.approx(10.0)
    assert np.all(np.diff(a.frames[:, 0, 0, 0].astype(int)) > 0)  # frames in order


def test_large_images_are_downscaled(tmp_path):
    Image.fromarray(np.zeros((300, 600, 3), np.uint8)).save(tmp_path / "big.png")
    a = load_avatar(tmp_path / "big.png", max_side=200)
    assert a.frames.shape == (1, 100, 200, 3)
