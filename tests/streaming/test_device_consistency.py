"""The infinitetalk backend with its model on a strict second device (tests/helpers/virtual_device.py):
offline renders through the engine (what `render` runs), both speech-feature paths, batched sessions,
adaptive-quality switches, idle windows and two speakers. Every tensor must be on the right device,
and the only host syncs are the decoded frames handed to the host.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streaming.generator import Avatar, WindowJob

from ..helpers.engine_runs import offline_frames, read_wav
from ..helpers.tiny_infinitetalk import tiny_bundle, tiny_generator
from ..helpers.virtual_device import bundle_on_device, shown_chunks, virtual_device

HANDOFF = "model/infinitetalk/handoff.py"
AVATAR = Avatar("face", np.random.default_rng(0).integers(0, 256, (1, 120, 96, 3), np.uint8))
TWO = Avatar("two", np.random.default_rng(1).integers(0, 256, (1, 64, 128, 3), np.uint8),
             speaker_boxes=((0, 0, 60, 64), (68, 0, 128, 64)))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    torch.set_num_threads(1)
    return tiny_bundle(tmp_path_factory.mktemp("tiny-infinitetalk"))


def _handoffs_only(audit) -> None:
    assert {s.where.split(":")[0] for s in audit.syncs} <= {HANDOFF}, \
        [(s.op, s.where) for s in audit.syncs if HANDOFF not in s.where]


@pytest.mark.parametrize("features", ["incremental", "rolling"])
async def test_an_offline_render_runs_on_the_device(bundle, speech_dir, features):
    speech = read_wav(speech_dir / "speech_de1.wav")[: 16000 * 2]
    with virtual_device() as audit:
        gen = tiny_generator(bundle_on_device(bundle), audio_features=features)
        frames = await offline_frames(gen, speech, AVATAR)
    n = gen.window.new_frames
    assert len(frames) % n == 0 and len(frames) * 640 >= speech.size
    np.testing.assert_array_equal(np.concatenate([f.audio for f in frames])[: speech.size], speech)
    _handoffs_only(audit)
    windows = len(frames) // n
    s = gen.settings.window
    assert audit.count("to_host") == windows * shown_chunks(s.frame_num, s.motion_frames)


def _job(gen, session: str, index: int, speech: np.ndarray | None, speakers: int = 1, **extras) -> WindowJob:
    spec = gen.window
    audio = np.zeros((speakers, spec.job_samples), np.float32)
    if speech is not None:
        audio[:, :] = speech[: spec.job_samples]
    return WindowJob(session, index, index * spec.new_frames, audio, speech is not None, dict(extras))


def test_batched_sessions_quality_switches_idle_and_two_speakers_run_on_the_device(bundle, speech_dir):
    speech = read_wav(speech_dir / "speech_en1.wav")
    with virtual_device() as audit:
        gen = tiny_generator(bundle_on_device(bundle))
        a, b = gen.open_session("a", AVATAR), gen.open_session("b", AVATAR)
        smaller = gen.quality_range(AVATAR).sizes[-1]
        made = []
        for i in range(3):  # window 1: fewer steps and a smaller size for both; window 2: idle
            extras = {"steps": 1, "size": smaller} if i == 1 else {}
            jobs = [_job(gen, s, i, None if i == 2 else speech[i * 640:], **extras) for s in ("a", "b")]
            works = [gen.prepare_window(st, job) for st, job in zip((a, b), jobs, strict=True)]
            made += list(gen.generate_batch(works))
        duo = gen.open_session("duo", TWO, speakers=2)
        made += [(2, f) for f in gen.generate(duo, _job(gen, "duo", 0, speech, speakers=2))]
    n = gen.window.new_frames
    assert len(made) == 7 * n
    assert all(f.shape == made[0][1].shape and f.dtype == np.uint8 for _, f in made[: 6 * n])
    _handoffs_only(audit)
