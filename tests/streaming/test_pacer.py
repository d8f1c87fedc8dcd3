"""The pacer alone, on a fake clock: steady frames with their own audio, fillers, clock slips,
interrupts, idle cuts, offline playout and what it reports back to the model side."""

from __future__ import annotations

import asyncio

import numpy as np

from streaming.generator import WindowSpec
from streaming.link import IdleCut
from streaming.output import PendingFrame
from streaming.pacer import Pacer
from streaming.session_settings import SessionState
from streaming.session_state import SessionStateMachine

SPEC = WindowSpec(new_frames=4)  # 25 fps, 640 samples a frame


class FakeClock:
    """Time moves only when the pacer sleeps (or the test says so)."""

    def __init__(self) -> None:
        self.t = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    async def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s
        await asyncio.sleep(0)


def frame(seq: int, speech: bool = False, arrival: float | None = None, epoch: int = 0) -> PendingFrame:
    image = np.full((2, 2, 3), seq + 1, np.uint8)
    return PendingFrame(image, np.full(640, (seq + 1) / 1000, np.float32), speech, seq // 4, arrival, epoch, seq)


def make(realtime: bool = True) -> tuple[Pacer, FakeClock, SessionStateMachine, list]:
    clock = FakeClock()
    machine = SessionStateMachine("t")
    machine.started()
    reports: list = []
    pacer = Pacer(SPEC, machine, reports.append, realtime=realtime, slip_reset_s=0.5, clock=clock, sleep=clock.sleep)
    return pacer, clock, machine, reports


async def take(it, n: int) -> list:
    return [await it.__anext__() for _ in range(n)]


async def test_frames_leave_every_frame_period_on_the_clock_with_their_own_audio_and_latency():
    pacer, clock, _, reports = make()
    for seq in range(5):
        pacer.accept(frame(seq, arrival=clock() - 0.1))
    out = await take(pacer.frames(), 5)
    assert [f.index for f in out] == list(range(5))
    np.testing.assert_allclose(np.diff([f.emitted_at for f in out]), 1 / 25)
    for seq, f in enumerate(out):
        np.testing.assert_array_equal(f.audio, frame(seq).audio)
        assert f.image[0, 0, 0] == seq + 1 and not f.filler
        assert f.latency == f.emitted_at - f.arrival
    assert [(r.seq, r.fillers) for r in reports] == [(s, 0) for s in range(5)]
    assert pacer.counters.frames_emitted == 5 and pacer.latency.summary().samples == 5


async def test_a_dry_queue_repeats_the_last_image_with_silence_and_reports_the_filler():
    pacer, clock, _, reports = make()
    pacer.accept(frame(0))
    pacer.accept(frame(1))
    out = await take(pacer.frames(), 4)
    assert [f.filler for f in out] == [False, False, True, True]
    for f in out[2:]:
        np.testing.assert_array_equal(f.image, out[1].image)
        assert not f.audio.any() and f.latency is None
    assert [(r.seq, r.fillers) for r in reports] == [(0, 0), (1, 0), (None, 1), (None, 2)]
    assert pacer.counters.filler_frames == 2
    np.testing.assert_allclose(np.diff([f.emitted_at for f in out]), 1 / 25)  # fillers keep the pace


async def test_a_consumer_far_behind_resets_the_clock_instead_of_bursting_and_a_little_behind_catches_up():
    pacer, clock, _, _ = make()
    for seq in range(10):
        pacer.accept(frame(seq))
    frames = pacer.frames()
    await take(frames, 2)
    clock.t += 0.2  # a little behind: the next frames leave at once to catch up
    caught_up = await take(frames, 3)
    assert pacer.counters.clock_slips == 0
    assert caught_up[0].emitted_at == caught_up[1].emitted_at  # no sleep in between
    clock.t += 1.0  # far behind (more than slip_reset_s): start the clock again from now
    late = await take(frames, 3)
    assert pacer.counters.clock_slips == 1
    np.testing.assert_allclose(np.diff([f.emitted_at for f in late]), 1 / 25)


async def test_interrupt_drops_queued_speech_keeps_idle_and_voids_the_frames_still_in_flight():
    pacer, clock, machine, _ = make()
    for seq, speech in enumerate([False, False, True, True]):
        pacer.accept(frame(seq, speech))
    msg, dropped = pacer.interrupt()
    assert dropped == 2 and (msg.epoch, msg.received_through) == (1, 3)
    pacer.accept(frame(4, True, epoch=0))  # made before the interrupt, landed after it
    pacer.accept(frame(5, False, epoch=1))
    out = await take(pacer.frames(), 3)
    assert [f.image[0, 0, 0] - 1 for f in out] == [0, 1, 5]
    assert pacer.counters.dropped_frames == 3
    assert machine.state is SessionState.IDLE


async def test_an_idle_cut_drops_the_idle_frames_queued_and_in_flight_in_its_range_only():
    pacer, clock, _, _ = make()
    for seq in range(6):
        pacer.accept(frame(seq))
    pacer.cut_idle(IdleCut(after_seq=2, through_seq=7, frames=5))
    assert len(pacer.queue) == 3
    pacer.accept(frame(6))  # cut while on its way
    pacer.accept(frame(8, speech=True))  # after the cut
    out = await take(pacer.frames(), 4)
    assert [f.image[0, 0, 0] - 1 for f in out] == [0, 1, 2, 8]
    assert pacer.counters.dropped_frames == 0  # the model side counts what it cut


async def test_speech_frames_make_the_session_speaking_and_the_first_idle_one_makes_it_idle_again():
    pacer, clock, machine, _ = make()
    seen = []
    machine.add_listener(seen.append)
    for seq, speech in enumerate([False, True, True, False]):
        pacer.accept(frame(seq, speech))
    frames = pacer.frames()
    states = []
    for _ in range(4):
        await frames.__anext__()
        states.append(machine.state)
    assert states == [SessionState.IDLE, SessionState.SPEAKING, SessionState.SPEAKING, SessionState.IDLE]
    assert seen == [SessionState.SPEAKING, SessionState.IDLE]


async def test_offline_plays_every_frame_as_it_comes_and_ends_once_production_is_done():
    pacer, clock, _, _ = make(realtime=False)

    async def produce():
        for seq in range(3):
            await asyncio.sleep(0.01)
            pacer.accept(frame(seq))
        pacer.production_done()

    producer = asyncio.create_task(produce())
    out = [f async for f in pacer.frames()]
    await producer
    assert [f.index for f in out] == [0, 1, 2] and not any(f.filler for f in out)
    assert clock.sleeps == []  # no pacing offline


async def test_closing_ends_the_frames_and_drops_what_arrives_after():
    pacer, clock, machine, _ = make()
    frames = pacer.frames()
    waiting = asyncio.create_task(frames.__anext__())
    await asyncio.sleep(0.01)
    machine.closing()
    pacer.close()
    try:
        await waiting
        raise AssertionError("a frame after close")
    except StopAsyncIteration:
        pass
    pacer.accept(frame(0))
    assert len(pacer.queue) == 0 and pacer.counters.dropped_frames == 1
