"""The FlashHead generator on a tiny random release: window size, audio alignment, causality, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.families import ModelOptions
from model.flashhead.tiny import write_tiny_flashhead
from streaming.backends import create_generator
from streaming.backends.infinitetalk import InfiniteTalkOptions
from streaming.generator import Avatar, WindowJob


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    torch.set_num_threads(1)
    return write_tiny_flashhead(tmp_path_factory.mktemp("fh") / "SoulX-FlashHead-1_3B")


def _generator(root):
    return create_generator("infinitetalk", InfiniteTalkOptions(ModelOptions(weights=root, size=(32, 32), seed=4)))


def _avatar() -> Avatar:
    return Avatar("a", np.random.default_rng(0).integers(0, 255, (1, 48, 40, 3), dtype=np.uint8))


def _run(gen, audios: list[np.ndarray]) -> list[list[np.ndarray]]:
    state = gen.open_session("s", _avatar())
    out = []
    for i, audio in enumerate(audios):
        job = WindowJob("s", i, i * gen.window.new_frames, audio[None], True)
        out.append(list(gen.generate(state, job)))
        # the rolling buffer ends exactly at the window's last frame: the chunk's last frame is its newest audio
        assert state.pushed_until == (i + 1) * gen.window.window_samples
        np.testing.assert_array_equal(state.features._buffer[-audio.size:], audio)
    return out


def test_windows_are_28_frames_causal_and_deterministic(root):
    gen = _generator(root)
    assert gen.window.new_frames == 28 and gen.window.lookahead_frames == 0 and gen.output_size(_avatar()) == (32, 32)
    rng = np.random.default_rng(1)
    audios = [(0.1 * rng.standard_normal(gen.window.job_samples)).astype(np.float32) for _ in range(2)]
    first = _run(gen, audios)
    assert [len(w) for w in first] == [28, 28]
    assert all(f.shape == (32, 32, 3) and f.dtype == np.uint8 for w in first for f in w)
    again = _run(_generator(root), audios)
    assert all(np.array_equal(a, b) for wa, wb in zip(first, again, strict=True) for a, b in zip(wa, wb, strict=True))
    changed = _run(gen, [audios[0], audios[1][::-1].copy()])
    assert all(np.array_equal(a, b) for a, b in zip(first[0], changed[0], strict=True))  # no look-ahead leak
    assert any(not np.array_equal(a, b) for a, b in zip(first[1], changed[1], strict=True))  # its own audio drives it


def test_more_than_one_speaker_is_refused(root):
    with pytest.raises(ValueError, match="one speaker"):
        _generator(root).open_session("s", _avatar(), speakers=2)


def test_sessions_batched_in_one_pass_equal_each_alone(root):
    gen = _generator(root)
    rng = np.random.default_rng(5)
    audios = [[(0.1 * rng.standard_normal(gen.window.job_samples)).astype(np.float32) for _ in range(2)]
              for _ in range(2)]
    alone = [_run(gen, a) for a in audios]  # each session on its own (sessions of one seed: same draws)
    states = [gen.open_session(f"s{i}", _avatar()) for i in range(2)]
    for w in range(2):
        jobs = [WindowJob(f"s{i}", w, w * gen.window.new_frames, audios[i][w][None], True) for i in range(2)]
        assert gen.batch_key(states[0], jobs[0]) == gen.batch_key(states[1], jobs[1]) is not None
        works = [gen.prepare_window(st, job) for st, job in zip(states, jobs, strict=True)]
        made: list[list[np.ndarray]] = [[], []]
        for k, frame in gen.generate_batch(works):
            made[k].append(frame)
        for i in range(2):
            assert len(made[i]) == gen.window.new_frames
            diff = max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(made[i], alone[i][w], strict=True))
            assert diff <= 1, (i, w, diff)  # batched float sums may round one uint8 step apart
    assert any(not np.array_equal(a, b) for a, b in zip(alone[0][1], alone[1][1], strict=True))  # really different


def test_face_crop_takes_the_references_square_around_the_face(root):
    from streaming.backends.infinitetalk.flashhead import face_crop

    img = np.arange(200 * 300 * 3, dtype=np.uint32).reshape(200, 300, 3).astype(np.uint8)
    crop = face_crop(img, (120, 80, 40, 40))  # centre (140, 100), side 80: x 100..180, y 56..136
    np.testing.assert_array_equal(crop, img[56:136, 100:180])
    edge = face_crop(img, (0, 0, 40, 40))  # centre (20, 20): x -20..60, y -24..56, clipped at the border
    np.testing.assert_array_equal(edge, img[0:56, 0:60])
    gen = create_generator("infinitetalk", InfiniteTalkOptions(ModelOptions(weights=root, size=(32, 32), seed=4),
                                                               face_crop=True))
    plain = _generator(root)
    avatar = _avatar()
    cropped_ref = gen.open_session("a", avatar).chunker.ref_image
    plain_ref = plain.open_session("b", avatar).chunker.ref_image
    assert cropped_ref.shape == plain_ref.shape == (3, 32, 32) and not torch.equal(cropped_ref, plain_ref)


def test_lite_windows_are_24_frames_causal_and_reproducible_with_sampled_posteriors(tmp_path):
    """Lite's LTX VAE samples its posterior (reference latent, motion latents) from each stream's own generator:
    a session is reproducible, its chunks see no later audio, and another seed gives another stream."""
    lite = write_tiny_flashhead(tmp_path / "SoulX-FlashHead-1_3B", kind="flashhead-lite")
    gen = _generator(lite)
    assert gen.window.new_frames == 24 and gen.model.motion_frames == 9
    rng = np.random.default_rng(2)
    audios = [(0.1 * rng.standard_normal(gen.window.job_samples)).astype(np.float32) for _ in range(2)]
    first = _run(gen, audios)
    assert [len(w) for w in first] == [24, 24]
    again = _run(_generator(lite), audios)
    assert all(np.array_equal(a, b) for wa, wb in zip(first, again, strict=True) for a, b in zip(wa, wb, strict=True))
    changed = _run(gen, [audios[0], audios[1][::-1].copy()])
    assert all(np.array_equal(a, b) for a, b in zip(first[0], changed[0], strict=True))  # no look-ahead leak
    other = create_generator("infinitetalk", InfiniteTalkOptions(ModelOptions(weights=lite, size=(32, 32), seed=5)))
    assert any(not np.array_equal(a, b) for a, b in zip(first[0], _run(other, audios)[0], strict=True))
