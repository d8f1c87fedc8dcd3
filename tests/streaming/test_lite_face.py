"""Face finding and framing for the lite backend: detectors bundled in PyPI packages only."""

from __future__ import annotations

import logging

import numpy as np

from streaming.avatars import default_avatar
from streaming.backends.lite import LiteGenerator, LiteSettings
from streaming.backends.lite.face import crop_box_for, detect_face_box, face_geometry
from streaming.generator import Avatar


def test_face_found_on_builtin_avatar_in_a_plausible_place():
    img = default_avatar().frames[0]
    h, w = img.shape[:2]
    (x, y, bw, bh), source = detect_face_box(img)
    assert source == "haar"
    # The portrait: head in the upper-middle, face 12-30% of the width.
    assert 0.3 * w < x + bw / 2 < 0.6 * w
    assert 0.1 * h < y + bh / 2 < 0.4 * h
    assert 0.12 * w < bw < 0.3 * w
    geom = face_geometry(img, (x, y, bw, bh), source)
    mx, my = geom.mouth
    assert x + 0.3 * bw < mx < x + 0.7 * bw and y + 0.6 * bh < my < y + bh
    assert len(geom.eyes) == 2
    (lx, ly, _), (rx, ry, _) = geom.eyes
    assert lx < mx < rx and y < ly < my and y < ry < my
    assert my < geom.chin_y


def test_lip_line_lies_on_a_dark_row_of_the_mouth():
    img = default_avatar().frames[0]
    geom = face_geometry(img)
    mx, my = geom.mouth
    gray = img.astype(np.float32).mean(axis=2)
    x0, x1 = int(mx - 0.5 * geom.mouth_half_width), int(mx + 0.5 * geom.mouth_half_width)
    band = gray[int(my) - 8: int(my) + 9, x0:x1].mean(axis=1)
    assert band[8] < np.median(band)


def test_blank_image_falls_back_to_a_centred_box_with_warning(caplog):
    img = np.full((300, 200, 3), 128, np.uint8)
    with caplog.at_level(logging.WARNING):
        (x, y, bw, bh), source = detect_face_box(img)
    assert source == "default"
    assert "no face found" in caplog.text
    assert abs((x + bw / 2) - 100) <= 1 and 0 <= y and y + bh <= 300


def test_crop_keeps_square_images_whole_and_centres_wide_ones_on_the_face():
    assert crop_box_for((512, 512), (512, 512), (10, 10, 50, 50)) == (0, 0, 512, 512)
    x0, y0, cw, ch = crop_box_for((1000, 400), (512, 512), (700, 100, 100, 100))
    assert (cw, ch) == (400, 400) and y0 == 0
    assert x0 <= 700 and 800 <= x0 + cw and abs(x0 + cw / 2 - 750) <= 1
    # Face near the edge: the crop is clamped inside the image.
    x0, _, cw, _ = crop_box_for((1000, 400), (512, 512), (950, 100, 40, 40))
    assert x0 + cw == 1000
    # Portrait output from a landscape source keeps the output aspect.
    _, _, cw, ch = crop_box_for((1280, 720), (480, 832), None)
    assert abs(cw / ch - 480 / 832) < 0.01


def test_wide_avatar_is_cropped_around_the_face():
    portrait = default_avatar().frames[0]
    canvas = np.full((512, 1100, 3), 90, np.uint8)
    canvas[:, 500:1012] = portrait
    g = LiteGenerator(LiteSettings(width=256, height=256))
    st = g.open_session("wide", Avatar("wide", canvas[None]))
    x, y, bw, bh = st.faces[0].geom.box
    assert st.frames.shape == (1, 256, 256, 3)
    # A plain centre crop would put this face at ~84% of the width; the face-centred crop near 50%.
    assert 0.4 * 256 < x + bw / 2 < 0.6 * 256


def test_faceless_avatar_still_animates_without_errors(caplog):
    from streaming.generator import WindowJob

    img = np.full((200, 300, 3), 150, np.uint8)
    img[::7] = 90  # some texture so warps are visible
    g = LiteGenerator(LiteSettings(width=128, height=128))
    with caplog.at_level(logging.WARNING):
        st = g.open_session("blank", Avatar("blank", img[None]))
    assert st.faces[0].geom.source == "default" and "no face found" in caplog.text
    rng = np.random.default_rng(0)
    audio = (0.3 * rng.standard_normal((1, g.window.job_samples))).astype(np.float32)
    frames = list(g.generate(st, WindowJob("blank", 0, 0, audio, True)))
    assert len(frames) == g.window.new_frames and all(f.shape == (128, 128, 3) for f in frames)


def test_speaker_box_outside_the_frame_is_harmless():
    from streaming.generator import WindowJob

    img = default_avatar().frames[0]
    g = LiteGenerator(LiteSettings(width=128, height=128))
    st = g.open_session("edge", Avatar("edge", img[None], speaker_boxes=((480, 480, 600, 600),)))
    audio = np.full((1, g.window.job_samples), 0.3, np.float32)
    frames = list(g.generate(st, WindowJob("edge", 0, 0, audio, True)))
    assert len(frames) == g.window.new_frames
