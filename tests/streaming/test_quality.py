"""Adaptive quality: fewer steps (then a smaller size) before a live session falls behind; back up with headroom."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import wave

import numpy as np
import pytest
import torch

from streaming.engine import Engine
from streaming.generator import Avatar, QualityRange, WindowJob
from streaming.quality import QualityController, QualitySettings
from streaming.session import SessionSettings

from ..helpers.pattern_backend import PatternGenerator
from ..helpers.tiny_infinitetalk import tiny_bundle, tiny_generator


def read_wav(path) -> np.ndarray:
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768.0


# ------------------------------------------------------------------------------ the controller alone
def test_controller_lowers_steps_in_proportion_then_the_size_and_stops_at_the_floor():
    c = QualityController(QualityRange(40, 10, ((480, 480), (352, 352))), QualitySettings(warmup_windows=0))
    assert c.level.steps == 40 and not c.level.reduced
    lv = c.observe(turnaround_s=1.5, window_s=1.0)  # 1.5x too slow
    assert lv is not None and lv.steps == 20 and lv.size == (480, 480) and "behind" in lv.reason  # 40 * 0.75 / 1.5
    assert c.observe(2.0, 1.0).steps == 10  # not below min_steps
    lv = c.observe(1.2, 1.0)
    assert lv.steps == 10 and lv.size == (352, 352) and "size 480x480 -> 352x352" in lv.reason
    assert c.observe(1.2, 1.0) is None  # nothing left to turn down
    assert c.lowered == 3 and c.level.reduced


def test_controller_raises_the_size_first_then_steps_after_enough_headroom():
    c = QualityController(QualityRange(8, 2, ((64, 64), (48, 48))), QualitySettings(warmup_windows=0, raise_after=2))
    c.observe(3.0, 1.0)
    c.observe(3.0, 1.0)
    assert (c.level.steps, c.level.size) == (2, (48, 48))
    assert c.observe(0.2, 1.0) is None  # one window of headroom is not enough
    assert c.observe(0.2, 1.0).size == (64, 64)
    assert c.observe(0.5, 1.0) is None and c.observe(0.5, 1.0) is None  # 0.5 * 3/2 > low_load 0.6: hold
    c.observe(0.2, 1.0)
    assert c.observe(0.2, 1.0).steps == 3 and c.level.reason.startswith("headroom")


def test_controller_ignores_warmup_and_reacts_to_filler_frames():
    c = QualityController(QualityRange(4, 1), QualitySettings(warmup_windows=1))
    assert c.observe(5.0, 1.0) is None  # the first window conditions the avatar: not judged
    lv = c.observe(0.5, 1.0, filler_frames=3)  # fast enough now, but the pacer had to fill
    assert lv.steps == 3 and "filler" in lv.reason


def test_the_first_window_at_a_new_size_is_not_judged():
    c = QualityController(QualityRange(2, 2, ((64, 64), (48, 48))), QualitySettings(warmup_windows=1))
    c.observe(1.0, 1.0)  # warm-up
    assert c.observe(2.0, 1.0).size == (48, 48)
    assert c.observe(2.0, 1.0) is None  # re-conditioning at the new size: not judged
    assert c.observe(2.0, 1.0) is None and c.lowered == 1  # judged, but nothing is left to turn down


def test_distilled_schedules_and_settings_can_leave_nothing_to_adapt():
    assert not QualityController(QualityRange(4, 4)).adjustable
    assert not QualityController(QualityRange(8, 2, ((64, 64), (48, 48))),
                                 QualitySettings(min_steps=8, switch_sizes=False)).adjustable


# ------------------------------------------------------------------------------ through a live session
class StepsPattern(PatternGenerator):
    """Pattern frames whose compute time is steps x per_step_s (set by the test as it goes)."""

    def __init__(self, steps: int = 8, min_steps: int = 2, **kw) -> None:
        super().__init__(**kw)
        self.steps, self.min_steps, self.per_step_s = steps, min_steps, 0.0
        self.steps_seen: list[int] = []

    def quality_range(self, avatar: Avatar) -> QualityRange:
        return QualityRange(self.steps, self.min_steps)

    def generate(self, state, job: WindowJob):
        steps = job.extras["steps"]
        self.steps_seen.append(steps)
        time.sleep(steps * self.per_step_s)
        yield from super().generate(state, job)


async def test_a_slow_backend_gets_fewer_steps_before_fillers_and_more_again_when_fast():
    gen = StepsPattern(new_frames=10)  # windows of 0.4 s
    engine = Engine(gen)
    frames = []
    try:
        session = await engine.open_session(Avatar("a", np.zeros((1, 24, 32, 3), np.uint8)),
                                            SessionSettings(quality=QualitySettings(raise_after=1)))

        async def consume():
            async for f in session.frames():
                frames.append(f)

        task = asyncio.create_task(consume())
        gen.per_step_s = 0.0475  # 8 steps: 0.38 s for 0.4 s of video: above high_load (0.9), not yet late
        deadline = time.monotonic() + 15
        while session.quality.lowered == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        lowered = session.stats()["quality"]
        fillers_when_lowered = session.counters.filler_frames
        assert lowered["steps"] < 8 and lowered["reduced"] and lowered["reason"].startswith("behind: window took")
        assert fillers_when_lowered <= 2  # acted on the turnaround, before the playout ran dry (tolerates a hiccup)
        gen.per_step_s = 0.002
        while session.quality.level.steps < 8 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        q = session.stats()["quality"]
        while gen.steps_seen[-1] != 8 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert q["steps"] == 8 and not q["reduced"] and q["reason"].startswith("headroom") and q["raised"] >= 1
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await session.close()
    finally:
        await engine.shutdown()
    assert min(gen.steps_seen) < 8 and gen.steps_seen[-1] == 8  # the backend was asked for the steps chosen


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    torch.set_num_threads(1)
    return tiny_bundle(tmp_path_factory.mktemp("tiny-quality"))


class Slowed:
    """Wraps a backend and adds a delay to every window (an artificially slow GPU)."""

    def __init__(self, inner, delay_s: float) -> None:
        self.inner, self.delay_s = inner, delay_s
        self.name, self.description, self.window = inner.name, inner.description, inner.window

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, state, job):
        time.sleep(self.delay_s)
        yield from self.inner.generate(state, job)


async def test_the_infinitetalk_backend_runs_fewer_dit_steps_when_its_session_falls_behind(bundle, speech_dir):
    gen = Slowed(tiny_generator(bundle), delay_s=0.8)  # windows of 0.48 s
    dit_calls: list[int] = []
    hook = bundle.pipe.dit.register_forward_hook(lambda m, a, o: dit_calls.append(1))
    engine = Engine(gen)
    try:
        session = await engine.open_session(Avatar("a", np.full((1, 32, 32, 3), 128, np.uint8)), SessionSettings())
        assert session.quality is not None and session.quality.max_steps == 2 and session.quality.min_steps == 1
        session.push_audio(read_wav(speech_dir / "speech_en1.wav")[: 16000 * 3])
        frames = session.frames()
        deadline = time.monotonic() + 30
        while session.quality.lowered == 0 and time.monotonic() < deadline:
            await anext(frames)
        assert session.stats()["quality"]["steps"] == 1
        before = len(dit_calls)
        await anext(frames)
        while session.counters.windows_speech + session.counters.windows_idle < 4 and time.monotonic() < deadline:
            await anext(frames)
        per_window = (len(dit_calls) - before) / max(1, session.counters.windows_speech + session.counters.windows_idle - 3)
        await frames.aclose()
        await session.close()
    finally:
        hook.remove()
        await engine.shutdown()
    assert per_window <= 1.0  # one step of one (batched) DiT call per window, down from two


async def test_a_window_at_a_smaller_size_is_delivered_at_the_output_size_and_the_session_continues(bundle):
    gen = tiny_generator(bundle, size=(64, 64))
    qr = gen.quality_range(Avatar("a", np.zeros((1, 64, 64, 3), np.uint8)))
    assert qr.sizes == ((64, 64), (48, 48)) and qr.steps == 2 and qr.min_steps == 1
    state = gen.open_session("s", Avatar("a", np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), np.uint8)))
    spec = gen.window
    latents: list[tuple[int, ...]] = []
    hook = bundle.pipe.dit.register_forward_hook(lambda m, a, o: latents.append(tuple(a[0].shape[-2:])))
    try:
        out = []
        for k, size in enumerate([(64, 64), (48, 48), (64, 64)]):
            audio = (np.random.default_rng(k).standard_normal((1, spec.job_samples)) * 0.1).astype(np.float32)
            job = WindowJob("s", k, k * spec.new_frames, audio, True, {"steps": 1, "size": size})
            out.append(list(gen.generate(state, job)))
            assert state.live.motion_pixels.shape[-2:] == size  # the next window continues from these
            assert latents[-1] == (size[0] // 8, size[1] // 8)
    finally:
        hook.remove()
    assert all(len(w) == spec.new_frames and w[0].shape == (64, 64, 3) for w in out)
    assert len(latents) == 3  # steps=1 was honoured: one DiT call per window


async def test_quality_reaches_the_stats_message_and_the_prometheus_metrics():
    from server.messages import stats
    from server.metrics import Metrics

    gen = StepsPattern(new_frames=10)
    engine = Engine(gen)
    try:
        session = await engine.open_session(Avatar("a", np.zeros((1, 24, 32, 3), np.uint8)))
        metrics = Metrics(gen.name)
        metrics.bind_quality(engine.quality_summary)
        session.quality.observe(1.0, 0.4)  # warm-up window: not judged
        session.quality.observe(1.0, 0.4)  # 2.5x too slow
        msg = stats(session, frames=0)
        assert msg["quality"]["steps"] == 2 and msg["quality"]["reduced"] and "behind" in msg["quality"]["reason"]
        text = metrics.render().decode()
        assert "infinitetalk_quality_reduced_sessions 1.0" in text and "infinitetalk_quality_min_steps 2.0" in text
        await session.close()
    finally:
        await engine.shutdown()


def test_distilled_schedules_step_between_their_named_step_counts(bundle):
    from model.infinitetalk.presets import get_preset

    gen = tiny_generator(bundle, window=dataclasses.replace(get_preset("flashtalk"), frame_num=9, motion_frames=5))
    qr = gen.quality_range(Avatar("a", np.zeros((1, 32, 32, 3), np.uint8)))
    assert (qr.steps, qr.min_steps, qr.choices()) == (4, 2, (2, 4))
    two = gen._window_settings(WindowJob("s", 0, 0, np.zeros((1, 1)), True, {"steps": 2}))
    assert two.steps == 2 and two.step_list == (1000, 500)
    c = QualityController(qr, QualitySettings(warmup_windows=0, raise_after=1))
    assert c.observe(1.05, 1.0).steps == 2  # 4 * 0.75 / 1.05 = 2.86 -> the next named count below: 2
    assert c.observe(0.1, 1.0).steps == 4  # raising goes straight back to 4 (3 is not a named count)
