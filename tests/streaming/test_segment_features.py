"""Generated speech with the infinitetalk backend: the features a window uses are the reference's
whole-clip features of its segment (streaming/segment_clips.py + backends/infinitetalk/segment_features.py),
at several segment phases, while a live session keeps the incremental ones. A tiny random model loaded
through the real loaders; real sessions on the engine."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from model.audio import whole_clip_embedding
from model.timebase import SAMPLES_PER_FRAME
from streaming.backends.infinitetalk.generator import InfiniteTalkBackendSettings, InfiniteTalkGenerator
from streaming.engine import Engine
from streaming.features import IncrementalFeatureExtractor
from streaming.generator import Avatar
from streaming.planner import PlannerSettings
from streaming.segment_clips import SEGMENT_CLIPS
from streaming.session import SessionSettings

from ..helpers.engine_runs import read_wav
from ..helpers.tiny_infinitetalk import FAST_FEATURES, FAST_WINDOW, tiny_bundle

SPF = SAMPLES_PER_FRAME
AVATAR = Avatar("face", np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), np.uint8))
M = FAST_WINDOW.motion_frames


class RowSpy(InfiniteTalkGenerator):
    """The real backend, recording each window's job and the [S, F, 5, layers, width] rows it used."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.used: list = []

    def _window_rows(self, state, job):
        rows = super()._window_rows(state, job)
        self.used.append((job, rows.clone()))
        return rows


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    torch.set_num_threads(1)
    return tiny_bundle(tmp_path_factory.mktemp("tiny-infinitetalk"))


def _spy(bundle, **overrides) -> RowSpy:
    return RowSpy(bundle, InfiniteTalkBackendSettings(window=FAST_WINDOW, size=(32, 32), features=FAST_FEATURES, seed=1,
                                                      **overrides))


def _speech(speech_dir, start_s: float, seconds: float, name: str = "speech_en1.wav") -> np.ndarray:
    x = read_wav(speech_dir / name)
    return x[int(start_s * 16000): int(start_s * 16000) + int(seconds * 16000)].copy()


def _placed(spy: RowSpy, seg: np.ndarray) -> tuple[int, int]:
    """Session sample where `seg` starts, and the index of the window whose own audio has its start
    (read from the jobs: the engine's layout, not the clips)."""
    ctx = spy.window.context_frames * SPF
    for job, _ in spy.used:
        window = job.audio[0, ctx:ctx + spy.window.window_samples]
        for off in range(0, window.size - 64):
            if np.array_equal(window[off:off + 64], seg[:64]) and np.array_equal(
                    window[off:off + min(window.size - off, seg.size)], seg[:window.size - off]):
                return job.first_frame * SPF + off, job.index
    raise AssertionError("no window played the segment's start")


def _ran(spy: RowSpy, seg: np.ndarray) -> bool:
    try:
        _placed(spy, seg)
    except AssertionError:
        return False
    return True


async def _until(predicate, timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.02)


def _check_rows(spy: RowSpy, refs: dict[str, tuple[int, torch.Tensor, range]]) -> dict[str, int]:
    """Every row entry of a frame inside a segment (start, whole-clip rows, the windows that knew it:
    from the one that took its start until an interrupt dropped it) equals that segment's whole-clip
    row; returns the entries checked per segment."""
    checked = dict.fromkeys(refs, 0)
    for job, rows in spy.used:
        if not job.speech:
            continue
        F = rows.shape[1]
        frames = job.first_frame - M + np.arange(F)[:, None] + np.arange(5)[None, :] - 2
        for (j, d), f in np.ndenumerate(frames):
            hits = []
            for name, (start, ref, jobs) in refs.items():
                k = (f * SPF - start + SPF // 2) // SPF
                if 0 <= k < ref.shape[0] and job.index in jobs:
                    hits.append((name, ref[k]))
            assert len(hits) <= 1, f"frame {f} falls in two segments"
            if hits:
                name, want = hits[0]
                torch.testing.assert_close(rows[0, j, d], want, atol=1e-4, rtol=1e-4,
                                           msg=lambda m, f=f, name=name: f"frame {f} of segment {name}: {m}")
                checked[name] += 1
    return checked


async def test_generated_windows_use_each_segments_whole_clip_features_at_every_phase(bundle, speech_dir):
    spy = _spy(bundle)
    engine = Engine(spy)
    a, b = _speech(speech_dir, 0.5, 1.3125), _speech(speech_dir, 2.0, 1.5)  # b starts mid-frame (phase 520)
    c, d, e = _speech(speech_dir, 3.5, 1.2), _speech(speech_dir, 5.0, 3.0), _speech(speech_dir, 1.0, 1.0, "speech_en2.wav")
    out: list = []
    try:
        session = await engine.open_session(AVATAR, SessionSettings(generated_speech=True, max_buffer_s=60))

        async def consume():
            async for frame in session.frames():
                out.append(frame)

        task = asyncio.create_task(consume())
        session.push_audio(a)  # two segments back to back: b continues a's window mid-frame
        session.end_segment()
        session.push_audio(b)
        session.end_segment()
        await _until(lambda: any(f.input_pos >= a.size + b.size for f in out))
        await asyncio.sleep(0.3)  # b's tail went out with silence padding: c starts after it
        session.push_audio(c)
        session.end_segment()
        await _until(lambda: any(f.input_pos >= a.size + b.size + c.size for f in out))
        session.push_audio(d)  # a segment interrupted once its first window ran ...
        await _until(lambda: _ran(spy, d))
        session.interrupt()
        session.push_audio(e)  # ... and the next one after it
        session.end_segment()
        await _until(lambda: _ran(spy, e) and spy.used[-1][0].first_frame * SPF >= _placed(spy, e)[0] + e.size)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert session.error is None
        await session.close()
    finally:
        await engine.shutdown()

    w2v = bundle.wav2vec2
    placed = {name: _placed(spy, seg) for name, seg in (("a", a), ("b", b), ("c", c), ("d", d), ("e", e))}
    starts = {name: start for name, (start, _) in placed.items()}
    assert starts["b"] == starts["a"] + a.size and starts["b"] % SPF == 520  # mid-frame
    padded = -(-(starts["b"] + b.size) // spy.window.window_samples) * spy.window.window_samples
    assert starts["c"] >= padded and starts["c"] % spy.window.window_samples == 0  # after the padding
    last = dict.fromkeys("abce", 10**9) | {"d": placed["e"][1] - 1}  # d was dropped by the interrupt
    refs = {name: (starts[name], whole_clip_embedding(w2v, seg), range(placed[name][1], last[name] + 1))
            for name, seg in
            (("a", a), ("b", b), ("c", c), ("d", d), ("e", e))}
    checked = _check_rows(spy, refs)
    assert all(n >= 5 * 5 for n in checked.values()), checked
    # The frames and their audio stay sample-exact: each segment's audio comes out unchanged.
    audio = np.concatenate([f.audio for f in out])
    for seg in (a, b, c):
        at = int(np.flatnonzero([np.array_equal(audio[i:i + 256], seg[:256]) for i in range(audio.size - 256)])[0])
        np.testing.assert_array_equal(audio[at:at + seg.size], seg)


async def test_a_segment_longer_than_a_clip_is_computed_block_by_block(bundle, speech_dir):
    spy = _spy(bundle, segment_clip_s=1.0)  # blocks of 25 frames
    a = _speech(speech_dir, 0.5, 2.5)
    engine = Engine(spy)
    try:
        settings = SessionSettings(generated_speech=True, planner=PlannerSettings(realtime=False), max_buffer_s=60)
        session = await engine.open_session(AVATAR, settings)
        session.push_audio(a)
        session.end_segment()
        frames = [f async for f in session.frames()]
        await session.close()
    finally:
        await engine.shutdown()
    np.testing.assert_array_equal(np.concatenate([f.audio for f in frames])[: a.size], a)
    block = 25 * SPF
    refs = {f"block{i}": (i * block, whole_clip_embedding(bundle.wav2vec2, a[i * block:(i + 1) * block]), range(10**9))
            for i in range(3)}
    checked = _check_rows(spy, refs)
    assert all(n >= 5 * 10 for n in checked.values()), checked


async def test_a_live_session_keeps_the_incremental_features(bundle, speech_dir):
    spy = _spy(bundle)
    engine = Engine(spy)
    a = _speech(speech_dir, 0.5, 2.0)
    try:
        session = await engine.open_session(AVATAR, SessionSettings(planner=PlannerSettings(realtime=False)))
        session.push_audio(a)
        session.end_input()
        frames = [f async for f in session.frames()]
        await session.close()
    finally:
        await engine.shutdown()
    assert frames and not any(SEGMENT_CLIPS in job.extras for job, _ in spy.used)
    lead = M + 2
    ex = IncrementalFeatureExtractor(bundle.wav2vec2, FAST_FEATURES)
    live = ex.push(np.concatenate([np.zeros(lead * SPF, np.float32), a]))  # row 0 = frame -lead
    whole = whole_clip_embedding(bundle.wav2vec2, a)
    checked, differs = 0, 0.0
    for job, rows in spy.used:
        F = rows.shape[1]
        for j in range(F):
            for dd in range(5):
                f = job.first_frame - M + j + dd - 2
                if 0 <= f + lead < live.shape[0]:
                    torch.testing.assert_close(rows[0, j, dd], live[f + lead], atol=1e-4, rtol=1e-4)
                    checked += 1
                if 0 <= f < whole.shape[0]:
                    differs = max(differs, float((rows[0, j, dd] - whole[f]).abs().max()))
    assert checked > 100
    assert differs > 1e-3, "the live approximation should not equal the whole clip exactly"


def test_the_bench_reports_the_feature_difference_and_the_first_frame_in_one_run(speech_dir):
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "bench/segment_features.py", "--trials", "1", "--seconds", "1",
         "--speech", str(speech_dir / "speech_en1.wav")],
        cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)}, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(done.stdout)
    diff = r["features_vs_whole_clip"]
    assert diff["generated"]["entries"] > 50 and diff["generated"]["max_abs"] < 1e-4
    assert diff["generated_live_features"]["max_abs"] > 1e-3 and diff["live"]["max_abs"] > 1e-3
    assert all(r["first_frame_median_ms"][mode] > 0 for mode in ("generated", "generated_live_features", "live"))
