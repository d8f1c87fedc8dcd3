"""One live session: audio in, paced frames with their exact audio out. No network code.

A session is a composition of parts with one job each (docs/architecture.md):

    transport side (stays with the client)        model side (where the model is)
    AudioIntake   any-rate audio -> 16 kHz chunks  WindowProduction  speech buffers, planner,
    Pacer         playout queue, paced frames,       job builder, idle cut, compute estimate,
                  fillers, clock slips, latency      adaptive quality, epochs -> GeneratorWorker
    SessionStateMachine  states and listeners

The two sides talk only through `streaming/link.py` (plain data both ways), so the model side can
move to another process while this class keeps the API the server uses. Frames are made one window
at a time (each window may depend on the previous one, as InfiniteTalk's motion frames do) and
played at a steady rate; each frame carries the 40 ms of audio it was generated from, so the output
audio is the input delayed, sample-exact.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import av
import numpy as np

from .audio_fifo import speech_capacity
from .audio_input import PcmFormat
from .audio_intake import AudioIntake
from .generator import SAMPLE_RATE, Avatar, Generator
from .latency import LatencyTracker
from .link import AudioChunk, IdleCut, PlayoutReport, ProductionInput, ProductionOutput
from .output import OutputFrame, PendingFrame
from .pacer import Pacer
from .planner import WindowPlanner
from .production import WindowProduction
from .quality import QualityController
from .segments import Event, SegmentTracker
from .session_settings import MAX_SPEAKERS, SessionCounters, SessionError, SessionSettings, SessionState
from .session_state import SessionStateMachine
from .worker import GeneratorWorker

__all__ = ["MAX_SPEAKERS", "Session", "SessionCounters", "SessionError", "SessionSettings", "SessionState"]

log = logging.getLogger(__name__)


class Session:
    """See the module docstring. Create through `Engine.open_session`, then `await start()`."""

    def __init__(
        self,
        generator: Generator,
        worker: GeneratorWorker,
        avatar: Avatar,
        settings: SessionSettings | None = None,
        session_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        production: Callable[[ProductionOutput], ProductionInput] | None = None,
    ) -> None:
        """production: builds the model side elsewhere (a cluster worker; `worker` is then unused);
        default: a `WindowProduction` in this process on `worker`."""
        self.id = session_id or uuid.uuid4().hex[:12]
        self.generator = generator
        self.avatar = avatar
        self.settings = s = settings or SessionSettings()
        self.spec = generator.window
        self.output_size = generator.output_size(avatar)
        self.error: SessionError | None = None
        self._closed = asyncio.Event()
        self._machine = SessionStateMachine(self.id)
        # transport side
        self._pacer = Pacer(self.spec, self._machine, self._played, realtime=s.planner.realtime,
                            slip_reset_s=s.slip_reset_s, drop_input_on_interrupt=s.generated_speech, clock=clock)
        capacity = speech_capacity(s.max_buffer_s, WindowPlanner(self.spec, s.planner).samples_needed)
        self._intake = AudioIntake(s.speakers, capacity, self._to_model, lambda: self._machine.live, clock)
        self._segments = SegmentTracker() if s.generated_speech else None
        # model side
        output = _InProcessOutput(self._pacer, self._intake, self._fail)
        self.production = (
            production(output) if production is not None
            else WindowProduction(self.id, generator, worker, avatar, s, self.output_size, output, clock))

    # ------------------------------------------------------------------ parts' figures
    @property
    def state(self) -> SessionState:
        return self._machine.state

    @property
    def latency(self) -> LatencyTracker:
        return self._pacer.latency

    @property
    def quality(self) -> QualityController | None:
        """The adaptive quality controller (model side; None when quality is fixed)."""
        return getattr(self.production, "quality", None)

    @property
    def counters(self) -> SessionCounters:
        """A snapshot of every part's counters."""
        pacer, intake, made = self._pacer.counters, self._intake.counters, self.production.stats()
        return SessionCounters(
            frames_emitted=pacer.frames_emitted, filler_frames=pacer.filler_frames,
            dropped_frames=pacer.dropped_frames + made.dropped_frames, clock_slips=pacer.clock_slips,
            windows_speech=made.windows_speech, windows_flush=made.windows_flush, windows_idle=made.windows_idle,
            windows_cancelled=made.windows_cancelled, idle_frames_cut=made.idle_frames_cut,
            audio_overflows=intake.audio_overflows, samples_in=intake.samples_in,
        )

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Prepare the backend's per-session state on the worker, then begin scheduling windows."""
        try:
            await self.production.start()
        except SessionError as err:
            if self._machine.state is SessionState.STARTING:  # else it was closed meanwhile
                self.error = err
                self._machine.start_failed()
                self._closed.set()
            raise
        self._machine.started()
        log.info("session %s started (backend %s, %d speaker(s))", self.id, self.generator.name, self.settings.speakers)

    async def close(self, reason: str = "closed") -> None:
        """Stop making windows, drop unplayed frames, release the backend state. Idempotent."""
        if not self._machine.live:
            await self._closed.wait()
            return
        self._machine.closing()
        self._pacer.close()
        await self.production.close()
        self._machine.closed()
        self._closed.set()
        log.info("session %s closed (%s)", self.id, reason)

    @property
    def closed(self) -> bool:
        return self.state == SessionState.CLOSED

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def add_state_listener(self, fn: Callable[[SessionState], None]) -> None:
        """`fn(state)` is called on the event loop at each state change."""
        self._machine.add_listener(fn)

    def _fail(self, err: SessionError) -> None:
        log.error("session %s failed: %s: %s", self.id, err.code, err.message)
        self.error = err
        self._pacer.wake()
        asyncio.get_running_loop().create_task(self.close(err.code))

    # ------------------------------------------------------------------ audio in, control
    def push_audio(self, samples: np.ndarray, speaker: int = 0, arrival: float | None = None) -> None:
        """Queue 16 kHz mono float32 speech. Raises AudioOverflow when the client sends too fast."""
        if self._segments is None:
            self._intake.push_audio(samples, speaker, arrival)
            return
        position = self._intake.position()
        self._intake.push_audio(samples, speaker, arrival)
        if self._intake.position() > position:
            self._segments.audio(position)

    def push_pcm(self, data: bytes, fmt: PcmFormat, speaker: int = 0) -> None:
        """Queue raw interleaved PCM (any supported rate/channels/format)."""
        self.push_audio(self._intake.convert_pcm(data, fmt, speaker), speaker)

    def push_av_frame(self, frame: av.AudioFrame, speaker: int = 0) -> None:
        """Queue a decoded audio frame (e.g. from a WebRTC track)."""
        self.push_audio(self._intake.convert_frame(frame, speaker), speaker)

    def end_input(self) -> None:
        """No more audio for now: the buffered tail is played without waiting for a full window."""
        self.production.end_input(self._intake.end_input())

    def end_segment(self) -> bool:
        """Generated speech: the segment being sent is complete (its tail plays without waiting for a
        full window). False when no segment was open (nothing sent since the last end marker)."""
        if self._segments is None:
            raise ValueError("segments are for generated speech: declare it when the session starts")
        self.end_input()
        return self._segments.end(self._intake.position())

    @property
    def unfinished_segments(self) -> int:
        """Generated speech: segments whose `playback_finished` has not been reported yet (0 when live)."""
        return 0 if self._segments is None else self._segments.unfinished

    def interrupt(self) -> int:
        """Drop queued speech and the unplayed frames of speech windows; back to idle within a window.

        Returns the number of frames dropped.
        """
        if not self._machine.live or self.state == SessionState.STARTING:
            return 0
        msg, dropped = self._pacer.interrupt()
        self._intake.interrupted()
        self.production.interrupt(msg)
        if self._segments is not None:
            self._segments.interrupted()
        self._machine.interrupted()
        log.info("session %s interrupted: %d queued frames dropped", self.id, dropped)
        return dropped

    def _played(self, report: PlayoutReport) -> None:
        self.production.played(report)

    def _to_model(self, chunk: AudioChunk) -> None:
        self.production.push_audio(chunk)

    # ------------------------------------------------------------------ frames out, reporting
    def frames(self) -> AsyncIterator[OutputFrame]:
        """Paced output: one frame per 1/fps seconds (as fast as made when offline). Single consumer.
        With generated speech each frame carries the playback events due with it (`events`)."""
        if self._segments is None:
            return self._pacer.frames()
        return self._frames_with_events(self._segments)

    async def _frames_with_events(self, segments: SegmentTracker) -> AsyncIterator[OutputFrame]:
        async for frame in self._pacer.frames():
            events: tuple[Event, ...] = segments.played(frame.input_pos)
            frame.events = events
            yield frame

    def buffered_seconds(self) -> float:
        """Speech waiting to be turned into video (the fullest speaker's buffer)."""
        return self._intake.buffered_samples() / SAMPLE_RATE

    @property
    def max_buffer_seconds(self) -> float:
        """The bound on buffered speech (per speaker): audio past it is refused (`AudioOverflow`)."""
        return self._intake.capacity / SAMPLE_RATE

    def stats(self) -> dict[str, Any]:
        lat = self.latency.summary()
        made = self.production.stats()
        return {
            "session": self.id,
            "backend": self.generator.name,
            "state": self.state.value,
            "latency_s": lat.last_s,
            "latency_mean_s": lat.mean_s,
            "latency_p95_s": lat.p95_s,
            "fps": self.latency.fps(),
            "buffered_speech_s": self.buffered_seconds(),
            "max_buffer_s": self.max_buffer_seconds,
            "unfinished_segments": self.unfinished_segments,
            "queued_frames": len(self._pacer.queue),
            "window_compute_s": made.window_compute_s,
            "window_frames": self.spec.new_frames,
            "quality": made.quality,
            **vars(self.counters),
            "error": None if self.error is None else {"code": self.error.code, "message": self.error.message},
        }


class _InProcessOutput:
    """`ProductionOutput` in one process: the model side's messages straight to the transport side's parts."""

    def __init__(self, pacer: Pacer, intake: AudioIntake, fail: Callable[[SessionError], None]) -> None:
        self._pacer = pacer
        self._intake = intake
        self._fail = fail

    def frame_made(self, frame: PendingFrame) -> None:
        self._pacer.accept(frame)

    def idle_cut(self, cut: IdleCut) -> None:
        self._pacer.cut_idle(cut)

    def audio_consumed(self, consumed: tuple[int, ...]) -> None:
        self._intake.consumed(consumed)

    def production_done(self) -> None:
        self._pacer.production_done()

    def production_failed(self, error: SessionError) -> None:
        self._fail(error)
