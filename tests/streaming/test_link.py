"""The seam is real: a session's two halves wired through `streaming/link.py` with every message
between them delayed, as a link between processes would (the cluster issue puts a Ray actor there).

`SplitSession` wires the parts as `Session` does, but each call across the seam goes through a
`SlowLink`: delivered in order, `delay_s` later. Nothing may rely on the other half answering at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from streaming.audio_fifo import speech_capacity
from streaming.audio_intake import AudioIntake
from streaming.generator import Avatar, Generator
from streaming.link import IdleCut
from streaming.output import PendingFrame
from streaming.pacer import Pacer
from streaming.production import WindowProduction
from streaming.session_settings import SessionError, SessionSettings
from streaming.session_state import SessionStateMachine
from streaming.worker import GeneratorWorker

from ..helpers.engine_runs import feed_realtime, read_wav
from ..helpers.pattern_backend import PatternGenerator, audio_code

AVATAR = Avatar("test", np.zeros((1, 24, 32, 3), np.uint8))
DELAY_S = 0.02


class SlowLink:
    """One direction of the link: calls run in the order sent, each `delay_s` after it was sent."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    def send(self, fn: Callable[..., Any], *args: Any) -> None:
        self._queue.put_nowait((self._loop.time() + self.delay_s, fn, args))

    async def _run(self) -> None:
        while True:
            due, fn, args = await self._queue.get()
            await asyncio.sleep(max(0.0, due - self._loop.time()))
            fn(*args)

    async def drain(self) -> None:
        while not self._queue.empty():
            await asyncio.sleep(self.delay_s)
        await asyncio.sleep(2 * self.delay_s)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


class SplitSession:
    """Transport side (intake, pacer, state) here; model side (`WindowProduction`) across two SlowLinks."""

    def __init__(self, gen: Generator, worker: GeneratorWorker, settings: SessionSettings) -> None:
        self.machine = SessionStateMachine("split")
        self.to_model = SlowLink(DELAY_S)
        self.to_transport = SlowLink(DELAY_S)
        self.failed: SessionError | None = None
        self.production = WindowProduction("split", gen, worker, AVATAR, settings, gen.output_size(AVATAR), self,
                                           time.monotonic)
        self.pacer = Pacer(gen.window, self.machine, lambda r: self.to_model.send(self.production.played, r),
                           realtime=settings.planner.realtime, clock=time.monotonic)
        capacity = speech_capacity(settings.max_buffer_s, self.production.planner.samples_needed)
        self.intake = AudioIntake(settings.speakers, capacity, lambda c: self.to_model.send(self.production.push_audio, c),
                                  lambda: self.machine.live, time.monotonic)

    # ProductionOutput, each message over the link
    def frame_made(self, frame: PendingFrame) -> None:
        self.to_transport.send(self.pacer.accept, frame)

    def idle_cut(self, cut: IdleCut) -> None:
        self.to_transport.send(self.pacer.cut_idle, cut)

    def audio_consumed(self, consumed: tuple[int, ...]) -> None:
        self.to_transport.send(self.intake.consumed, consumed)

    def production_done(self) -> None:
        self.to_transport.send(self.pacer.production_done)

    def production_failed(self, error: SessionError) -> None:
        self.failed = error

    # what Session does, with the model side's calls over the link
    def push_audio(self, samples: np.ndarray) -> None:
        self.intake.push_audio(samples)

    def interrupt(self) -> None:
        msg, _ = self.pacer.interrupt()
        self.intake.interrupted()
        self.to_model.send(self.production.interrupt, msg)
        self.machine.interrupted()

    async def start(self) -> None:
        await self.production.start()
        self.machine.started()

    async def close(self) -> None:
        self.machine.closing()
        self.pacer.close()
        await self.production.close()
        self.machine.closed()
        await self.to_model.close()
        await self.to_transport.close()


async def run_split(gen: PatternGenerator, body: Callable[[SplitSession, list], Any]) -> tuple[SplitSession, list]:
    worker = GeneratorWorker(gen)
    split = None
    frames: list = []
    try:
        split = SplitSession(gen, worker, SessionSettings())
        await split.start()

        async def consume() -> None:
            async for f in split.pacer.frames():
                frames.append(f)

        consumer = asyncio.create_task(consume())
        await body(split, frames)
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
    finally:
        if split is not None:
            await split.close()
        worker.stop()
    assert split.failed is None
    return split, frames


def check_pairing(frames) -> None:
    for f in frames:
        if not f.filler:
            assert f.image[1, 0, 0] == audio_code(f.audio), f"frame {f.index}: image/audio mismatch"


async def test_over_a_slow_link_speech_after_idle_is_cut_in_and_comes_back_sample_exact_and_paired(speech_dir):
    speech = read_wav(speech_dir / "speech_en1.wav")[:16000]  # more than one 0.8 s window
    gen = PatternGenerator(new_frames=20, continue_frames=3)  # long windows: long idle queues

    async def body(split: SplitSession, frames: list) -> None:
        while len(split.pacer.queue) < 14:
            await asyncio.sleep(0.005)
        split.push_audio(speech)
        while sum(f.speech for f in frames) < 20:  # the whole first speech window played
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.8)

    split, frames = await run_split(gen, body)
    check_pairing(frames)
    assert [f.index for f in frames] == list(range(len(frames)))
    assert sum(f.filler for f in frames) <= 3
    # The onset cut unseen idle frames across the link, and the speech window continued from the
    # frames that were on screen just before it.
    onset = next(j for j in gen.jobs if j.speech)
    assert split.production.counters.idle_frames_cut == onset.extras["frames_cut"] >= 8
    first = next(i for i, f in enumerate(frames) if f.speech)
    before = [f.image for f in frames[:first] if not f.filler][-3:]
    for seen, given in zip(before, onset.extras["continue_from"], strict=True):
        np.testing.assert_array_equal(seen, given)
    assert frames[first].latency < 0.4 + 2 * DELAY_S
    out = np.concatenate([f.audio for f in frames[first:]])  # speech follows at once, sample-exact
    np.testing.assert_array_equal(out[: speech.size], speech)


async def test_over_a_slow_link_an_interrupt_voids_frames_in_flight_and_the_mirror_ends_equal_to_the_queue(speech_dir):
    speech = read_wav(speech_dir / "speech_en1.wav")[: 16000 * 4]
    gen = PatternGenerator(new_frames=4)
    marks: dict[str, int] = {}

    async def body(split: SplitSession, frames: list) -> None:
        split.push_audio(speech)  # 4 s at once
        while not any(f.speech for f in frames):
            await asyncio.sleep(0.01)
        marks["interrupt"] = len(frames)
        split.interrupt()
        assert split.intake.buffered_samples() == 0
        await asyncio.sleep(0.8)
        marks["speech_again"] = len(frames)
        split.push_audio(speech[: 16000])
        await asyncio.sleep(1.5)

    split, frames = await run_split(gen, body)
    check_pairing(frames)
    after = frames[marks["interrupt"] : marks["speech_again"]]
    # Within a window, plus the frames a round trip over the link takes, speech stops.
    late = gen.window.new_frames + int(2 * DELAY_S * 25) + 1
    assert not any(f.speech for f in after[late:])
    assert any(f.speech for f in frames[marks["speech_again"] :])  # and comes back with new speech


async def test_once_the_link_is_quiet_the_model_sides_mirror_holds_exactly_the_pacers_queue(speech_dir):
    speech = read_wav(speech_dir / "speech_en1.wav")[: 16000 * 2]
    gen = PatternGenerator(new_frames=4, continue_frames=2)

    async def body(split: SplitSession, frames: list) -> None:
        await asyncio.sleep(0.5)
        await feed_realtime(split, speech[:16000])
        split.interrupt()
        split.push_audio(speech[16000:])

    worker = GeneratorWorker(gen)
    try:
        split = SplitSession(gen, worker, SessionSettings())
        await split.start()
        frames: list = []

        async def consume() -> None:
            async for f in split.pacer.frames():
                frames.append(f)

        consumer = asyncio.create_task(consume())
        await body(split, frames)
        consumer.cancel()  # nothing plays any more: production fills up to its limit and waits
        await asyncio.gather(consumer, return_exceptions=True)
        await asyncio.sleep(0.5)
        await split.to_transport.drain()
        await split.to_model.drain()
        assert split.production.mirror.seqs() == split.pacer.queue.seqs()
        assert split.production.mirror.seqs()  # something is queued
        await split.close()
    finally:
        worker.stop()
    check_pairing(frames)
