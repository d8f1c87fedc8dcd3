"""One live session: audio in, paced frames with their exact audio out. No network code.

A session ties together its speech buffers, the window planner, the shared generator worker and
the pacer. Its state machine is what the viewer sees:

    starting -> idle <-> speaking;  any -> interrupted -> idle;  any -> closing -> closed

Frames are made one window at a time (each window may depend on the previous one, as
InfiniteTalk's motion frames do) and played at a steady rate; each frame carries the 40 ms of
audio it was generated from, so the output audio is the input delayed, sample-exact.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import av
import numpy as np

from .audio_fifo import AudioOverflow, SpeechFifo
from .audio_input import AudioConverter, PcmFormat
from .generator import (
    CONTINUE_FROM,
    FRAMES_CUT,
    SAMPLE_RATE,
    AdaptiveQualityGenerator,
    Avatar,
    ContinuingGenerator,
    Generator,
    WindowJob,
)
from .latency import LatencyTracker
from .output import OutputFrame, PendingFrame, PlayoutQueue
from .planner import Decision, PlannerInput, WindowPlanner, has_voice
from .quality import QualityController
from .session_settings import MAX_SPEAKERS, SessionCounters, SessionError, SessionSettings, SessionState
from .worker import GeneratorWorker, JobCancelled

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
    ) -> None:
        self.id = session_id or uuid.uuid4().hex[:12]
        self.generator = generator
        self.worker = worker
        self.avatar = avatar
        self.settings = settings or SessionSettings()
        self.spec = generator.window
        self.planner = WindowPlanner(self.spec, self.settings.planner)
        self.clock = clock
        self.counters = SessionCounters()
        self.latency = LatencyTracker()
        self.state = SessionState.STARTING
        self.error: SessionError | None = None
        self.created_at = clock()
        self.output_size = generator.output_size(avatar)
        self.quality = self._quality_controller()
        self._continue_frames = generator.continue_frames if isinstance(generator, ContinuingGenerator) else 0
        self._can_cut_idle = bool(self._continue_frames and self.settings.cut_idle and self.settings.planner.realtime)

        n = self.settings.speakers
        capacity = max(int(self.settings.max_buffer_s * SAMPLE_RATE), 2 * self.planner.samples_needed)
        self._fifos = [SpeechFifo(capacity) for _ in range(n)]
        self._converters = [AudioConverter() for _ in range(n)]
        self._history = np.zeros((n, self.spec.context_frames * self.spec.samples_per_frame), np.float32)
        self._playout = PlayoutQueue()
        self._epoch = 0
        self._window_index = 0
        self._previous_took_speech = False
        self._input_ended = False
        self._last_audio_at: float | None = None  # when audio last arrived (the client is still sending)
        self._production_done = False
        self._compute_s = self.settings.initial_compute_s
        self._compute_measured = False
        self._gen_state: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._frame_ready = asyncio.Event()
        self._closed = asyncio.Event()
        self._scheduler: asyncio.Task | None = None
        self._in_flight: asyncio.Future | None = None
        self._listeners: list[Callable[[SessionState], None]] = []

    def _quality_controller(self) -> QualityController | None:
        q = self.settings.quality
        if not q.enabled or not self.settings.planner.realtime or not isinstance(self.generator, AdaptiveQualityGenerator):
            return None
        qrange = self.generator.quality_range(self.avatar)
        if qrange is None:
            return None
        controller = QualityController(qrange, q)
        return controller if controller.adjustable else None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Prepare the backend's per-session state on the worker, then begin scheduling windows."""
        self._loop = asyncio.get_running_loop()
        fut = self.worker.call(self.generator.open_session, self.id, self.avatar, self.settings.speakers)
        try:
            self._gen_state = await asyncio.wrap_future(fut)
        except Exception as exc:
            self.error = SessionError("generator_error", f"could not prepare the avatar: {exc}")
            self._set_state(SessionState.CLOSED)
            self._closed.set()
            raise self.error from exc
        self._set_state(SessionState.IDLE)
        self._scheduler = asyncio.create_task(self._schedule_loop(), name=f"session-{self.id}-scheduler")
        log.info("session %s started (backend %s, %d speaker(s))", self.id, self.generator.name, self.settings.speakers)

    async def close(self, reason: str = "closed") -> None:
        """Stop making windows, drop unplayed frames, release the backend state. Idempotent."""
        if self.state in (SessionState.CLOSING, SessionState.CLOSED):
            await self._closed.wait()
            return
        self._set_state(SessionState.CLOSING)
        self._epoch += 1
        self._playout.clear()
        self._frame_ready.set()
        self._wake.set()
        in_flight = self._in_flight
        if self._scheduler is not None:
            self._scheduler.cancel()
            await asyncio.gather(self._scheduler, return_exceptions=True)
        if in_flight is not None and not in_flight.done():
            await asyncio.wait([in_flight], timeout=30)
        if in_flight is not None and in_flight.done() and not in_flight.cancelled():
            in_flight.exception()  # retrieved: else asyncio logs it from __del__ during a later GC
        if self._gen_state is not None and self.worker.alive:
            try:
                await asyncio.wait_for(asyncio.wrap_future(self.worker.call(self.generator.close_session, self._gen_state)), 30)
            except Exception:  # noqa: BLE001 - closing must always complete
                log.exception("session %s: backend close_session failed", self.id)
            self._gen_state = None
        self._set_state(SessionState.CLOSED)
        self._closed.set()
        log.info("session %s closed (%s)", self.id, reason)

    @property
    def closed(self) -> bool:
        return self.state == SessionState.CLOSED

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def add_state_listener(self, fn: Callable[[SessionState], None]) -> None:
        """`fn(state)` is called on the event loop at each state change."""
        self._listeners.append(fn)

    def _set_state(self, state: SessionState) -> None:
        if state == self.state:
            return
        self.state = state
        for fn in list(self._listeners):
            try:
                fn(state)
            except Exception:  # noqa: BLE001 - a listener must not break the session
                log.exception("session %s: state listener failed", self.id)

    # ------------------------------------------------------------------ audio in
    def _check_speaker(self, speaker: int) -> None:
        if not 0 <= speaker < self.settings.speakers:
            raise ValueError(f"speaker {speaker} out of range: this session has {self.settings.speakers} speaker(s)")

    def push_audio(self, samples: np.ndarray, speaker: int = 0, arrival: float | None = None) -> None:
        """Queue 16 kHz mono float32 speech. Raises AudioOverflow when the client sends too fast."""
        self._check_speaker(speaker)
        if self.state in (SessionState.CLOSING, SessionState.CLOSED):
            return
        samples = np.asarray(samples, np.float32).reshape(-1)
        try:
            self._fifos[speaker].push(samples, self.clock() if arrival is None else arrival)
        except AudioOverflow:
            self.counters.audio_overflows += 1
            raise
        self.counters.samples_in += samples.size
        if samples.size:
            self._last_audio_at = self.clock()
        self._input_ended = False
        self._wake.set()

    def push_pcm(self, data: bytes, fmt: PcmFormat, speaker: int = 0) -> None:
        """Queue raw interleaved PCM (any supported rate/channels/format)."""
        self._check_speaker(speaker)
        self.push_audio(self._converters[speaker].convert_pcm(data, fmt), speaker)

    def push_av_frame(self, frame: av.AudioFrame, speaker: int = 0) -> None:
        """Queue a decoded audio frame (e.g. from a WebRTC track)."""
        self._check_speaker(speaker)
        self.push_audio(self._converters[speaker].convert_frame(frame), speaker)

    def end_input(self) -> None:
        """No more audio for now: the buffered tail is played without waiting for a full window."""
        for speaker, conv in enumerate(self._converters):
            tail = conv.flush()
            if tail.size and self.state not in (SessionState.CLOSING, SessionState.CLOSED):
                self._fifos[speaker].push(tail, self.clock())
        self._input_ended = True
        self._wake.set()

    def interrupt(self) -> int:
        """Drop queued speech and the unplayed frames of speech windows; back to idle within a window.

        Returns the number of frames dropped.
        """
        if self.state in (SessionState.CLOSING, SessionState.CLOSED, SessionState.STARTING):
            return 0
        for fifo in self._fifos:
            fifo.clear()
        self._epoch += 1
        dropped = self._playout.drop_speech()
        self.counters.dropped_frames += dropped
        self._previous_took_speech = False
        self._set_state(SessionState.INTERRUPTED)
        self._wake.set()
        log.info("session %s interrupted: %d queued frames dropped", self.id, dropped)
        return dropped

    # ------------------------------------------------------------------ scheduling
    def _planner_input(self) -> PlannerInput:
        return PlannerInput(
            fill_samples=max(len(f) for f in self._fifos),
            ahead_s=len(self._playout) / self.spec.fps,
            compute_s=self._compute_s,
            previous_took_speech=self._previous_took_speech,
            oldest_wait_s=self._oldest_wait(),
            input_ended=self._input_ended,
            can_cut_idle=self._can_cut_idle,
            input_idle_s=math.inf if self._last_audio_at is None else self.clock() - self._last_audio_at,
        )

    def _oldest_wait(self) -> float:
        arrivals = [t for t in (f.arrival_of(0) for f in self._fifos) if t is not None]
        return self.clock() - min(arrivals) if arrivals else 0.0

    async def _schedule_loop(self) -> None:
        try:
            while self.state not in (SessionState.CLOSING, SessionState.CLOSED):
                p = self._planner_input()
                decision = self.planner.decide(p)
                if decision is Decision.WAIT:
                    if not self.settings.planner.realtime and self._input_ended and p.fill_samples == 0:
                        self._production_done = True
                        self._frame_ready.set()
                        return
                    timeout = self.planner.wait_s(p) if self.settings.planner.realtime else None
                    await self._wait_wake(timeout)
                    continue
                await self._run_window(decision)
        except asyncio.CancelledError:
            raise
        except SessionError as exc:
            await self._fail(exc)
        except Exception as exc:  # noqa: BLE001 - reported to the client, never crashes the server
            log.exception("session %s: scheduler failed", self.id)
            await self._fail(SessionError("internal_error", f"session failed: {exc}"))

    async def _wait_wake(self, timeout: float | None) -> None:
        self._wake.clear()
        if timeout is None:
            await self._wake.wait()
            return
        try:
            await asyncio.wait_for(self._wake.wait(), max(0.002, min(timeout, 1.0)))
        except asyncio.TimeoutError:
            pass

    def _build_job(self, decision: Decision) -> tuple[WindowJob, np.ndarray, list[float | None]]:
        spec = self.spec
        n_win, spf = spec.window_samples, spec.samples_per_frame
        n_look = spec.lookahead_frames * spf
        window = np.zeros((len(self._fifos), n_win), np.float32)
        look = np.zeros((len(self._fifos), n_look), np.float32)
        look_real = n_look
        arrivals: list[float | None] = [None] * spec.new_frames
        for s, fifo in enumerate(self._fifos):
            if decision is not Decision.IDLE:
                held = len(fifo)
                for f in range(min(spec.new_frames, -(-held // spf))):
                    # The frame's last input sample: a flushed window's last real frame may be partial.
                    t = fifo.arrival_of(min((f + 1) * spf, held) - 1)
                    if t is not None and (arrivals[f] is None or t > arrivals[f]):
                        arrivals[f] = t
                taken = fifo.take(n_win)
                window[s, : taken.size] = taken
            # An idle window's successor is not known yet (idle again, or speech from the buffer's head):
            # its look-ahead is left unknown rather than guessed.
            ahead = fifo.peek(n_look) if decision is not Decision.IDLE else np.zeros(0, np.float32)
            look[s, : ahead.size] = ahead
            look_real = min(look_real, ahead.size)
        audio = np.concatenate([self._history, window, look], axis=1)
        if self._history.shape[1]:
            self._history = np.concatenate([self._history, window], axis=1)[:, -self._history.shape[1] :]
        speech = decision is not Decision.IDLE and has_voice(window, self.settings.vad_threshold_db, spf)
        job = WindowJob(self.id, self._window_index, self._window_index * spec.new_frames, audio, speech,
                        lookahead_samples=look_real)
        if self.quality is not None:
            job.extras.update(self.quality.job_extras())
        return job, window, arrivals

    def _cut_idle(self, job: WindowJob) -> None:
        """Audio after idle windows: drop the queued idle frames that would play after this window could
        be ready (all but compute + 2 margins' worth), and have it continue from the last ones kept."""
        context = self._continue_frames
        if not self._can_cut_idle:
            return
        fps = self.spec.fps
        keep = math.ceil((self._compute_s + 2 * self.settings.planner.margin_s) * fps)
        dropped, shown = self._playout.cut_idle_tail(keep, context)
        if shown is None:
            return
        job.extras[CONTINUE_FROM] = shown
        job.extras[FRAMES_CUT] = dropped
        self.counters.idle_frames_cut += dropped
        log.debug("session %s: speech starts %d idle frames (%.2f s) sooner", self.id, dropped, dropped / fps)

    async def _run_window(self, decision: Decision) -> None:
        job, window, arrivals = self._build_job(decision)
        if not self._previous_took_speech:
            self._cut_idle(job)
        self._window_index += 1
        self._previous_took_speech = decision is not Decision.IDLE
        if decision is Decision.SPEECH:
            self.counters.windows_speech += 1
        elif decision is Decision.FLUSH:
            self.counters.windows_flush += 1
        else:
            self.counters.windows_idle += 1
        spf = self.spec.samples_per_frame
        mixed = np.clip(window.sum(axis=0), -1.0, 1.0)
        epoch = self._epoch
        loop = self._loop
        assert loop is not None

        def on_frame(i: int, image: np.ndarray) -> None:  # worker thread
            pending = PendingFrame(image, mixed[i * spf : (i + 1) * spf], job.speech, job.index, arrivals[i], epoch)
            loop.call_soon_threadsafe(self._accept_frame, pending)

        started = time.perf_counter()
        deadline = time.monotonic() + len(self._playout) / self.spec.fps
        w, h = self.output_size
        fut = self.worker.submit_window(
            self._gen_state, job, on_frame, deadline=deadline, cancelled=lambda: epoch != self._epoch,
            frame_shape=(h, w, 3),
        )
        self._in_flight = asyncio.wrap_future(fut)
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
        elapsed = time.perf_counter() - started
        self._compute_s = 0.8 * self._compute_s + 0.2 * elapsed if self._compute_measured else elapsed
        self._compute_measured = True
        if self.quality is not None and self.quality.observe(elapsed, self.spec.window_seconds,
                                                             self.counters.filler_frames) is not None:
            log.info("session %s: quality now %s", self.id, self.quality.level.as_dict())

    def _accept_frame(self, pending: PendingFrame) -> None:
        if pending.epoch != self._epoch or self.state in (SessionState.CLOSING, SessionState.CLOSED):
            self.counters.dropped_frames += 1
            return
        self._playout.push(pending)
        self._frame_ready.set()

    async def _fail(self, err: SessionError) -> None:
        log.error("session %s failed: %s: %s", self.id, err.code, err.message)
        self.error = err
        self._frame_ready.set()
        asyncio.get_running_loop().create_task(self.close(err.code))

    # ------------------------------------------------------------------ frames out
    async def frames(self) -> AsyncIterator[OutputFrame]:
        """Paced output: one frame per 1/fps seconds (as fast as made when offline). Single consumer."""
        fps = self.spec.fps
        realtime = self.settings.planner.realtime
        t0: float | None = None
        k = 0
        last_image: np.ndarray | None = None
        silence = np.zeros(self.spec.samples_per_frame, np.float32)
        while True:
            if self.state in (SessionState.CLOSING, SessionState.CLOSED):
                return
            if t0 is None or not realtime:
                while not self._playout and not self._production_done:
                    if self.state in (SessionState.CLOSING, SessionState.CLOSED):
                        return
                    self._frame_ready.clear()
                    await self._frame_ready.wait()
                if not self._playout:
                    return  # offline and everything was played
                if t0 is None:
                    t0 = self.clock()
            if realtime:
                due = t0 + k / fps
                now = self.clock()
                if due > now:
                    await asyncio.sleep(due - now)
                elif now - due > self.settings.slip_reset_s:
                    t0 = now - k / fps
                    self.counters.clock_slips += 1
                if self.state in (SessionState.CLOSING, SessionState.CLOSED):
                    return
            pending = self._playout.pop()
            now = self.clock()
            if pending is None:
                assert last_image is not None
                out = OutputFrame(k, last_image, silence, False, -1, emitted_at=now, filler=True, epoch=self._epoch)
                self.counters.filler_frames += 1
            else:
                latency = now - pending.arrival if pending.arrival is not None else None
                out = OutputFrame(
                    k, pending.image, pending.audio, pending.speech, pending.window,
                    pending.arrival, now, latency, False, pending.epoch,
                )
                last_image = pending.image
                if latency is not None:
                    self.latency.record_latency(latency)
                if pending.speech:
                    self._set_state(SessionState.SPEAKING)
                elif self.state in (SessionState.SPEAKING, SessionState.INTERRUPTED):
                    self._set_state(SessionState.IDLE)
            self.latency.record_emit(now)
            self.counters.frames_emitted += 1
            k += 1
            self._wake.set()
            yield out

    # ------------------------------------------------------------------ reporting
    def buffered_seconds(self) -> float:
        """Speech waiting to be turned into video (the fullest speaker's buffer)."""
        return max(len(f) for f in self._fifos) / SAMPLE_RATE

    def stats(self) -> dict[str, Any]:
        lat = self.latency.summary()
        return {
            "session": self.id,
            "backend": self.generator.name,
            "state": self.state.value,
            "latency_s": lat.last_s,
            "latency_mean_s": lat.mean_s,
            "latency_p95_s": lat.p95_s,
            "fps": self.latency.fps(),
            "buffered_speech_s": self.buffered_seconds(),
            "queued_frames": len(self._playout),
            "window_compute_s": self._compute_s,
            "window_frames": self.spec.new_frames,
            "quality": None if self.quality is None else {
                **self.quality.level.as_dict(), "changes": self.quality.changes,
                "lowered": self.quality.lowered, "raised": self.quality.raised,
            },
            **{k: v for k, v in vars(self.counters).items()},
            "error": None if self.error is None else {"code": self.error.code, "message": self.error.message},
        }
