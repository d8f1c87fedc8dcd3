"""Generated speech with the FlashHead generator: a chunk's audio windows read each segment's whole-clip
features (the reference's offline "once" mode, no loudness normalisation) where the segment plays, a
segment starting mid-frame included; a live session keeps the rolling 8 s path. Tiny random release,
real offline sessions on the engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.audio import whole_clip_embedding
from model.families import ModelOptions
from model.flashhead.tiny import write_tiny_flashhead
from model.timebase import SAMPLES_PER_FRAME
from streaming.backends import create_generator
from streaming.backends.infinitetalk import InfiniteTalkOptions
from streaming.engine import Engine
from streaming.features.rolling import RollingClipFeatures
from streaming.generator import Avatar
from streaming.planner import PlannerSettings
from streaming.segment_clips import SEGMENT_CLIPS
from streaming.session import SessionSettings

from ..helpers.engine_runs import read_wav

SPF = SAMPLES_PER_FRAME
AVATAR = Avatar("a", np.random.default_rng(0).integers(0, 255, (1, 48, 40, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    torch.set_num_threads(1)
    return write_tiny_flashhead(tmp_path_factory.mktemp("fh") / "SoulX-FlashHead-1_3B")


async def _windows(root, segments: list[np.ndarray], generated: bool) -> tuple[object, list]:
    """Run one offline session over `segments` (back to back); returns the generator and, per chunk,
    (job, the [F, 5, layers, width] windows it used)."""
    gen = create_generator("infinitetalk", InfiniteTalkOptions(ModelOptions(weights=root, size=(32, 32), seed=4)))
    used: list = []
    rows = gen._rows

    def spy(state, job):
        out = rows(state, job)
        used.append((job, out.clone()))
        return out

    gen._rows = spy
    engine = Engine(gen)
    try:
        settings = SessionSettings(planner=PlannerSettings(realtime=False), generated_speech=generated, max_buffer_s=60)
        session = await engine.open_session(AVATAR, settings)
        for seg in segments:
            session.push_audio(seg)
            if generated:
                session.end_segment()
        session.end_input()
        frames = [f async for f in session.frames()]
        await session.close()
    finally:
        await engine.shutdown()
    np.testing.assert_array_equal(np.concatenate([f.audio for f in frames])[: sum(s.size for s in segments)],
                                  np.concatenate(segments))  # sample-exact
    return gen, used


async def test_chunks_of_generated_speech_read_each_segments_whole_clip_rows(root, speech_dir):
    x = read_wav(speech_dir / "speech_en2.wav")
    a, b = x[8000:8000 + 21000].copy(), x[40000:40000 + 30000].copy()  # b starts mid-frame (phase 520)
    gen, used = await _windows(root, [a, b], generated=True)
    assert used and all(SEGMENT_CLIPS in job.extras for job, _ in used if job.speech)
    w2v, F, N = gen.model.wav2vec2, gen.model.chunk.frame_num, gen.window.new_frames
    refs = [(0, whole_clip_embedding(w2v, a, loudness=False)), (a.size, whole_clip_embedding(w2v, b, loudness=False))]
    checked = [0, 0]
    for job, windows in used:
        first = job.first_frame + N - F
        for j in range(F):
            for d in range(5):
                f = first + j + d - 2
                for s, (start, ref) in enumerate(refs):
                    k = (f * SPF - start + SPF // 2) // SPF
                    if 0 <= k < ref.shape[0]:
                        torch.testing.assert_close(windows[j, d], ref[k], atol=1e-4, rtol=1e-4)
                        checked[s] += 1
    assert min(checked) > 5 * 20, checked


async def test_a_live_session_keeps_the_rolling_path(root, speech_dir):
    a = read_wav(speech_dir / "speech_en2.wav")[8000:8000 + 21000].copy()
    gen, used = await _windows(root, [a], generated=False)
    assert used and not any(SEGMENT_CLIPS in job.extras for job, _ in used)
    roll = RollingClipFeatures(gen.model.wav2vec2, gen.model.rolling_seconds, loudness=False)
    for job, windows in used:  # the same windows as the rolling path fed the same chunks
        roll.push(job.audio[0, : gen.window.window_samples])
        torch.testing.assert_close(windows, roll.window(gen.model.chunk.frame_num), atol=1e-5, rtol=1e-5)
