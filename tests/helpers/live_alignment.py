"""Live-paced session -> for every speech frame, the cosine between the feature row the backend gave the
DiT and the whole-clip features of the audio timeline the windows were made from.

Random weights cannot show lip sync, so tests/streaming/test_live_feature_alignment.py checks this
invariant behind it; tests/bounds/feature_bounds_sweep.py (--live) measures it over other wav2vec2 models.
"""

from __future__ import annotations

import asyncio

import numpy as np
import torch

from model.audio import whole_clip_embedding
from streaming.engine import Engine
from streaming.generator import Avatar
from streaming.quality import QualitySettings
from streaming.session import SessionSettings

from .engine_runs import feed_realtime

AVATAR = Avatar("face", np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), np.uint8))


async def live_rows(gen, speech: np.ndarray) -> tuple[list, dict[int, torch.Tensor]]:
    """Run a live-paced session (idle, then speech fed by the clock); record each window's job and the
    centre feature rows of its new frames."""
    jobs, used = [], {}
    rows_of = gen._window_rows

    def spy(state, job):
        rows = rows_of(state, job)
        jobs.append(job)
        if job.speech:
            M = gen.settings.window.motion_frames
            used[job.first_frame] = rows[0, M:, 2].clone()  # the frame's own row of its +-2 window
        return rows

    gen._window_rows = spy
    engine = Engine(gen)
    try:
        session = await engine.open_session(AVATAR, SessionSettings(quality=QualitySettings(enabled=False)))

        async def consume():
            async for _ in session.frames():
                pass

        consumer = asyncio.create_task(consume())
        await asyncio.sleep(0.4)
        await feed_realtime(session, speech)
        await asyncio.sleep(2.0)
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        await session.close()
    finally:
        await engine.shutdown()
    return jobs, used


async def live_alignment_cosines(gen, wav2vec2, speech: np.ndarray) -> tuple[torch.Tensor, int]:
    """(per speech frame: cosine of the live row vs the whole-clip row of its audio, speech windows run)."""
    jobs, used = await live_rows(gen, speech)
    n, spf = gen.window.new_frames, gen.window.samples_per_frame
    lead = gen.settings.window.motion_frames + 2  # silence fed before the session's first frame
    # The audio timeline the windows were made from (idle windows: silence), in generated order.
    timeline = np.zeros((max(j.first_frame for j in jobs) + n + lead) * spf, np.float32)
    for j in jobs:
        timeline[(j.first_frame + lead) * spf:(j.first_frame + lead + n) * spf] = j.audio[0, :n * spf]
    reference = whole_clip_embedding(wav2vec2, timeline)
    cos = []
    for first, rows in used.items():
        ref = reference[first + lead:first + lead + n]
        cos.append(torch.nn.functional.cosine_similarity(rows.flatten(1), ref.flatten(1), dim=-1))
    return torch.cat(cos), len(used)
