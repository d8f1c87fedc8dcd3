"""FlashHead's colour correction: strength 0 is the identity, strength 1 moves every frame's Lab
statistics onto the reference image's, and a frame equal to the reference comes back unchanged."""

from __future__ import annotations

import pytest
import torch

from model.flashhead.colour import lab_to_rgb, match_colours_flashhead, rgb_to_lab


def _images(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ref = torch.rand(3, 16, 16, generator=g) * 0.6 - 0.3 + torch.tensor([0.2, 0.0, -0.1])[:, None, None]
    cast = torch.tensor([0.2, -0.05, -0.2])[:, None, None, None]  # a warm, darker drift of the same scene
    frames = (ref[:, None] * 0.7 + cast + 0.05 * torch.randn(3, 4, 16, 16, generator=g)).clamp(-0.95, 0.95)
    return frames, ref


def test_lab_round_trip() -> None:
    rgb = torch.rand(64, 3, generator=torch.Generator().manual_seed(1)) * 0.9 + 0.05
    torch.testing.assert_close(lab_to_rgb(rgb_to_lab(rgb)), rgb, atol=2e-4, rtol=0)


def test_strength_zero_is_identity() -> None:
    frames, ref = _images()
    assert torch.equal(match_colours_flashhead(frames, ref, 0.0), frames)


def test_full_strength_matches_lab_statistics() -> None:
    frames, ref = _images()
    out = match_colours_flashhead(frames, ref, 1.0)
    ref_lab = rgb_to_lab(((ref + 1) / 2).permute(1, 2, 0))
    for f in range(out.shape[1]):
        lab = rgb_to_lab(((out[:, f] + 1) / 2).permute(1, 2, 0))
        torch.testing.assert_close(lab.mean(dim=(0, 1)), ref_lab.mean(dim=(0, 1)), atol=0.5, rtol=0)
    before = rgb_to_lab(((frames[:, 0] + 1) / 2).permute(1, 2, 0)).mean(dim=(0, 1))
    assert (before - ref_lab.mean(dim=(0, 1))).abs().max() > 5  # the frames really were off


def test_reference_frame_is_a_fixed_point_and_strength_blends() -> None:
    frames, ref = _images(2)
    same = match_colours_flashhead(ref[:, None].repeat(1, 2, 1, 1), ref, 1.0)
    torch.testing.assert_close(same, ref[:, None].repeat(1, 2, 1, 1), atol=1e-3, rtol=0)
    half = match_colours_flashhead(frames, ref, 0.5)
    full = match_colours_flashhead(frames, ref, 1.0)
    torch.testing.assert_close(half, (frames + full) / 2, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="strength"):
        match_colours_flashhead(frames, ref, 1.5)
