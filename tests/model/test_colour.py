"""Lab colour matching: against scikit-image's conversions and the reference loop's own windows."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from skimage.color import lab2rgb, rgb2lab

from model.colour import lab_to_rgb, match_colours, rgb_to_lab


def test_lab_conversions_match_scikit_image():
    rgb = np.random.default_rng(0).random((32, 40, 3), dtype=np.float32)
    lab = rgb_to_lab(torch.from_numpy(rgb)).numpy()
    np.testing.assert_allclose(lab, rgb2lab(rgb), atol=2e-4)
    back = lab_to_rgb(torch.from_numpy(lab)).numpy()
    np.testing.assert_allclose(back, lab2rgb(lab.astype(np.float32)), atol=1e-5)
    np.testing.assert_allclose(back, rgb, atol=1e-4)


def test_matching_a_frame_to_itself_changes_nothing_and_strength_zero_is_identity():
    frames = torch.rand(3, 2, 16, 16) * 2 - 1
    same = match_colours(frames[:, :1], frames[:, 0], 1.0)
    torch.testing.assert_close(same, frames[:, :1], atol=2e-4, rtol=0)
    assert match_colours(frames, frames[:, 0], 0.0) is frames


def test_matching_moves_statistics_to_the_reference():
    ref = torch.rand(3, 24, 24) * 0.5 - 0.75  # dark
    frames = torch.rand(3, 3, 24, 24) * 0.5 + 0.25  # bright
    out = match_colours(frames, ref, 1.0)
    to_lab = lambda x: rgb_to_lab(((x + 1) / 2).clamp(0, 1).movedim(0, -1))  # noqa: E731
    ref_l = to_lab(ref)[..., 0].mean()
    for f in range(3):
        assert abs(float(to_lab(out[:, f])[..., 0].mean() - ref_l)) < 1.0


@pytest.mark.parametrize("case", ["i2v_cfg3", "i2v_cfg2", "v2v_cfg3"])
def test_reproduces_the_reference_loops_colour_correction(golden_dir, case):
    loop = golden_dir / "loop"
    settings = json.loads((loop / "settings.json").read_text())["cases"][case]
    w = load_file(loop / f"{case}.windows.safetensors")
    reference = w["w0.cond_image"]  # the colour reference is always the first condition frame
    strength = settings["color_correction_strength"]
    for k in range(settings["n_windows"]):
        out = match_colours(w[f"w{k}.decoded"], reference, strength)
        torch.testing.assert_close(out, w[f"w{k}.decoded_cc"], atol=1e-4, rtol=0)
