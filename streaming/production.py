"""The model side of a session: speech in, made frames out, one window at a time.

It buffers the session's speech (`SpeechBuffers`), asks the planner when to make the next window
and from what (`WindowPlanner`, fed with how much video is left to play from `PlayoutMirror`), lays
out the job (`JobBuilder`), cuts unseen idle frames at speech onset, submits the job to the shared
`GeneratorWorker` (earliest deadline first: the moment the pacer would run dry), and sends each frame
out with the exact audio it was made from. It keeps the compute estimate the planner and the idle cut
use, and feeds the adaptive quality controller. With generated speech and a backend that takes them
(`SegmentFeaturesGenerator`) it attaches to each window the known audio of the segments it plays
(`segment_clips.py`), so their speech features are computed over the whole segment. Interrupts and close void the window in flight
(epochs: a window belongs to the epoch it was submitted in).

Everything it receives and sends is plain data through `streaming/link.py`, so it can run in
another process than the transport side of its session (the cluster issue).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .audio_fifo import SpeechBuffers, speech_capacity
from .generator import (
    CONTINUE_FROM,
    FRAMES_CUT,
    AdaptiveQualityGenerator,
    Avatar,
    ContinuingGenerator,
    Generator,
    SegmentFeaturesGenerator,
    WindowJob,
)
from .job_builder import BuiltWindow, JobBuilder
from .link import AudioChunk, Interrupt, PlayoutReport, ProductionOutput, ProductionStats
from .output import PendingFrame
from .planner import Decision, PlannerInput, WindowPlanner
from .playout_mirror import PlayoutMirror
from .quality import QualityController
from .segment_clips import SEGMENT_CLIPS, SegmentClipRecorder
from .session_settings import SessionError, SessionSettings
from .worker import GeneratorWorker, JobCancelled

log = logging.getLogger(__name__)


class ComputeEstimate:
    """How long a window takes, submit to last frame (queue wait included, so other sessions' load
    counts): the configured guess until the first window is measured, then 0.8 old + 0.2 new."""

    def __init__(self, initial_s: float) -> None:
        self.seconds = initial_s
        self.measured = False

    def observe(self, elapsed_s: float) -> None:
        self.seconds = 0.8 * self.seconds + 0.2 * elapsed_s if self.measured else elapsed_s
        self.measured = True


def quality_controller(generator: Generator, avatar: Avatar, settings: SessionSettings) -> QualityController | None:
    """The session's adaptive quality, when it is live, enabled and the backend has something to turn down."""
    q = settings.quality
    if not q.enabled or not settings.planner.realtime or not isinstance(generator, AdaptiveQualityGenerator):
        return None
    qrange = generator.quality_range(avatar)
    if qrange is None:
        return None
    controller = QualityController(qrange, q)
    return controller if controller.adjustable else None


def segment_clip_recorder(generator: Generator, settings: SessionSettings) -> SegmentClipRecorder | None:
    """Generated speech with a backend that computes features over whole segments: their recorder."""
    if not settings.generated_speech or not isinstance(generator, SegmentFeaturesGenerator):
        return None
    frames = generator.segment_clip_frames
    if frames < 1:
        return None
    spf = generator.window.samples_per_frame
    return SegmentClipRecorder(frames * spf, generator.segment_reach_frames * spf)


@dataclass
class ProductionCounters:
    windows_speech: int = 0
    windows_flush: int = 0
    windows_idle: int = 0
    windows_cancelled: int = 0
    idle_frames_cut: int = 0
    dropped_frames: int = 0  # made for an epoch that had ended (interrupt, close)


class WindowProduction:
    """See the module docstring; implements `ProductionInput`. Runs on the event loop of its process;
    the worker calls back from its thread only through `loop.call_soon_threadsafe`."""

    def __init__(self, session_id: str, generator: Generator, worker: GeneratorWorker, avatar: Avatar,
                 settings: SessionSettings, output_size: tuple[int, int], output: ProductionOutput,
                 clock: Callable[[], float]) -> None:
        self.session_id = session_id
        self.generator = generator
        self.worker = worker
        self.avatar = avatar
        self.settings = settings
        self.spec = generator.window
        self.output_size = output_size
        self.planner = WindowPlanner(self.spec, settings.planner)
        self.quality = quality_controller(generator, avatar, settings)
        self.compute = ComputeEstimate(settings.initial_compute_s)
        self.counters = ProductionCounters()
        self.buffers = SpeechBuffers(settings.speakers, speech_capacity(settings.max_buffer_s, self.planner.samples_needed))
        self.builder = JobBuilder(session_id, self.spec, settings.speakers, settings.vad_threshold_db)
        self.mirror = PlayoutMirror()
        self.segment_clips = segment_clip_recorder(generator, settings)
        self._output = output
        self._clock = clock
        self._continue_frames = generator.continue_frames if isinstance(generator, ContinuingGenerator) else 0
        # Generated speech cuts idle frames with any backend: its first frame should cost one window's
        # compute, not the idle video queued before it; a backend that cannot continue from the frames
        # shown then jumps at that moment from its idle motion to the speech (lite: a slight pose change).
        continuing = bool(self._continue_frames) or settings.generated_speech
        self._can_cut_idle = bool(continuing and settings.cut_idle and settings.planner.realtime)
        self._epoch = 0
        self._seq = 0
        self._previous_took_speech = False
        self._fillers = 0  # the pacer's running count, from its reports
        self._closing = False
        self._gen_state: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._scheduler: asyncio.Task | None = None
        self._in_flight: asyncio.Future | None = None

    @property
    def window_in_flight(self) -> bool:
        """A window is on the worker (queued or running)."""
        return self._in_flight is not None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Prepare the backend's per-session state on the worker, then begin scheduling windows."""
        self._loop = asyncio.get_running_loop()
        fut = self.worker.call(self.generator.open_session, self.session_id, self.avatar, self.settings.speakers)
        try:
            self._gen_state = await asyncio.wrap_future(fut)
        except Exception as exc:
            raise SessionError("generator_error", f"could not prepare the avatar: {exc}") from exc
        if self._closing:  # closed while the backend prepared: release what it made
            await self._release()
            raise SessionError("closed", "the session was closed while it started")
        self._scheduler = asyncio.create_task(self._schedule_loop(), name=f"session-{self.session_id}-scheduler")

    async def close(self) -> None:
        """Void the window in flight, stop scheduling, release the backend's state."""
        self._closing = True
        self._epoch += 1
        self.mirror.clear()
        self._wake.set()
        in_flight = self._in_flight
        if self._scheduler is not None:
            self._scheduler.cancel()
            await asyncio.gather(self._scheduler, return_exceptions=True)
        if in_flight is not None and not in_flight.done():
            await asyncio.wait([in_flight], timeout=30)
        if in_flight is not None and in_flight.done() and not in_flight.cancelled():
            in_flight.exception()  # retrieved: else asyncio logs it from __del__ during a later GC
        await self._release()

    async def _release(self) -> None:
        if self._gen_state is not None and self.worker.alive:
            try:
                fut = self.worker.call(self.generator.close_session, self._gen_state)
                await asyncio.wait_for(asyncio.wrap_future(fut), 30)
            except Exception:  # noqa: BLE001 - closing must always complete
                log.exception("session %s: backend close_session failed", self.session_id)
        self._gen_state = None

    # ------------------------------------------------------------------ from the transport side
    def push_audio(self, chunk: AudioChunk) -> None:
        if self._closing:
            return
        if self.segment_clips is not None:
            self.segment_clips.pushed(self._write_position(), chunk.samples.size)
        self.buffers.push(chunk.speaker, chunk.samples, chunk.arrival, self._clock())
        self._wake.set()

    def end_input(self, tails: tuple[AudioChunk, ...] = ()) -> None:
        for chunk in tails:
            self.buffers.push_tail(chunk.speaker, chunk.samples, chunk.arrival)
        self.buffers.input_ended = True
        if self.segment_clips is not None:
            self.segment_clips.ended(self._write_position())
        self._wake.set()

    def _write_position(self) -> int:
        """Speaker 0's input samples pushed so far (generated speech has one speaker)."""
        fifo = self.buffers.fifos[0]
        return fifo.consumed + len(fifo)

    def interrupt(self, msg: Interrupt) -> None:
        """Drop the buffered speech; the window in flight and frames on their way are void."""
        self.buffers.clear()
        if self.segment_clips is not None:
            self.segment_clips.interrupted()
        self._epoch = msg.epoch
        self.mirror.interrupted(msg)
        self._previous_took_speech = False
        self._output.audio_consumed(self.buffers.consumed())
        self._wake.set()

    def played(self, report: PlayoutReport) -> None:
        self.mirror.played(report)
        self._fillers = report.fillers
        self._wake.set()

    def stats(self) -> ProductionStats:
        q = self.quality
        quality = None if q is None else {**q.level.as_dict(), "changes": q.changes, "lowered": q.lowered,
                                          "raised": q.raised}
        return ProductionStats(self.compute.seconds, quality, **vars(self.counters))

    # ------------------------------------------------------------------ scheduling
    def _planner_input(self) -> PlannerInput:
        now = self._clock()
        return PlannerInput(
            fill_samples=self.buffers.fill(),
            ahead_s=len(self.mirror) / self.spec.fps,
            compute_s=self.compute.seconds,
            previous_took_speech=self._previous_took_speech,
            oldest_wait_s=self.buffers.oldest_wait(now),
            input_ended=self.buffers.input_ended,
            can_cut_idle=self._can_cut_idle,
            input_idle_s=self.buffers.input_idle(now),
            generated=self.settings.generated_speech,
        )

    async def _schedule_loop(self) -> None:
        realtime = self.settings.planner.realtime
        try:
            while not self._closing:
                p = self._planner_input()
                decision = self.planner.decide(p)
                if decision is Decision.WAIT:
                    if not realtime and self.buffers.input_ended and p.fill_samples == 0:
                        self._output.production_done()
                        return
                    await self._wait_wake(self.planner.wait_s(p) if realtime else None)
                    continue
                await self._run_window(decision)
        except asyncio.CancelledError:
            raise
        except SessionError as exc:
            self._output.production_failed(exc)
        except Exception as exc:  # noqa: BLE001 - reported to the client, never crashes the server
            log.exception("session %s: scheduler failed", self.session_id)
            self._output.production_failed(SessionError("internal_error", f"session failed: {exc}"))

    async def _wait_wake(self, timeout: float | None) -> None:
        """Until audio arrives, a frame is played, or `timeout` (capped at 1 s) passes."""
        self._wake.clear()
        if timeout is None:
            await self._wake.wait()
            return
        try:
            await asyncio.wait_for(self._wake.wait(), max(0.002, min(timeout, 1.0)))
        except asyncio.TimeoutError:
            pass

    async def _run_window(self, decision: Decision) -> None:
        built = self.builder.build(decision, self.buffers.fifos)
        self._output.audio_consumed(self.buffers.consumed())
        if self.segment_clips is not None:
            self._attach_segment_clips(built)
        if self.quality is not None:
            built.job.extras.update(self.quality.job_extras())
        if not self._previous_took_speech and (self._continue_frames or decision is not Decision.IDLE):
            self._cut_idle(built.job)  # a backend that starts afresh is cut only for speech (generated)
        self._previous_took_speech = decision is not Decision.IDLE
        if decision is Decision.SPEECH:
            self.counters.windows_speech += 1
        elif decision is Decision.FLUSH:
            self.counters.windows_flush += 1
        else:
            self.counters.windows_idle += 1
        started = time.perf_counter()
        self._in_flight = asyncio.wrap_future(self._submit(built, self._epoch))
        try:
            await asyncio.shield(self._in_flight)
        except JobCancelled:
            self.counters.windows_cancelled += 1
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise SessionError("generator_error", f"video generation failed: {type(exc).__name__}: {exc}") from exc
        finally:
            self._in_flight = None
        self._measured(time.perf_counter() - started)

    def _attach_segment_clips(self, built: BuiltWindow) -> None:
        """Generated speech: the known audio of the segments this window plays, for the backend's features."""
        assert self.segment_clips is not None
        spf, job = self.spec.samples_per_frame, built.job
        taken = built.positions[-1] - built.input_start
        ctx = self.spec.context_frames * spf
        clips = self.segment_clips.clips(job.first_frame * spf, built.input_start, job.audio[0, ctx:ctx + taken],
                                         built.lookahead_taken, self.buffers.fifos[0])
        if clips:
            job.extras[SEGMENT_CLIPS] = clips

    def _cut_idle(self, job: WindowJob) -> None:
        """Audio after idle windows: drop the queued idle frames that would play after this window could
        be ready (all but compute + 2 margins' worth, 1 for generated speech), and have it continue
        from the last ones kept."""
        if not self._can_cut_idle:
            return
        fps = self.spec.fps
        # Live, two margins: the window's audio may still be arriving. Generated speech is all here.
        margins = 1 if self.settings.generated_speech else 2
        keep = math.ceil((self.compute.seconds + margins * self.settings.planner.margin_s) * fps)
        cut, shown = self.mirror.cut_idle_tail(keep, self._continue_frames)
        if cut is None:
            return
        self._output.idle_cut(cut)
        if shown is None:
            if not self._continue_frames:  # generated speech with a backend that starts afresh
                self.counters.idle_frames_cut += cut.frames
            return
        job.extras[CONTINUE_FROM] = shown
        job.extras[FRAMES_CUT] = cut.frames
        self.counters.idle_frames_cut += cut.frames
        log.debug("session %s: speech starts %d idle frames (%.2f s) sooner", self.session_id, cut.frames, cut.frames / fps)

    def _submit(self, built: BuiltWindow, epoch: int) -> concurrent.futures.Future:
        loop = self._loop
        assert loop is not None

        def on_frame(i: int, image: np.ndarray) -> None:  # worker thread
            loop.call_soon_threadsafe(self._made, built, i, image, epoch)

        deadline = time.monotonic() + len(self.mirror) / self.spec.fps
        w, h = self.output_size
        return self.worker.submit_window(
            self._gen_state, built.job, on_frame, deadline=deadline, cancelled=lambda: epoch != self._epoch,
            frame_shape=(h, w, 3),
        )

    def _made(self, built: BuiltWindow, i: int, image: np.ndarray, epoch: int) -> None:
        """Frame i of a window, back on the loop: out to the pacer, unless its epoch ended."""
        if epoch != self._epoch or self._closing:
            self.counters.dropped_frames += 1
            return
        frame = PendingFrame(image, built.frame_audio(i, self.spec.samples_per_frame), built.job.speech,
                             built.job.index, built.arrivals[i], epoch, self._seq, built.positions[i])
        self._seq += 1
        self.mirror.sent(frame)
        self._output.frame_made(frame)

    def _measured(self, elapsed: float) -> None:
        self.compute.observe(elapsed)
        if self.quality is not None and self.quality.observe(elapsed, self.spec.window_seconds,
                                                             self._fillers) is not None:
            log.info("session %s: quality now %s", self.session_id, self.quality.level.as_dict())
