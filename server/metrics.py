"""Prometheus metrics on a per-app registry (never the process-global one, so apps and tests stay apart)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from streaming.output import OutputFrame

PREFIX = "infinitetalk"
LATENCY_BUCKETS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)


class Metrics:
    """The server's counters and gauges. `frame()` is called once per frame sent to a client.

    transports: the registered transports' names; their `transport` series start at 0 (a transport
    not listed gets its series when it first counts something)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, backend: str, transports: Iterable[str] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.backend = Gauge(f"{PREFIX}_backend_info", "Backend in use (value 1).", ["backend"], registry=r)
        self.backend.labels(backend).set(1)
        self.sessions = Gauge(f"{PREFIX}_sessions", "Live engine sessions.", ["transport"], registry=r)
        self.connections = Gauge(f"{PREFIX}_connections", "Open client connections.", ["transport"], registry=r)
        self.sessions_opened = Counter(f"{PREFIX}_sessions_opened", "Sessions opened.", ["transport"], registry=r)
        self.frames = Counter(f"{PREFIX}_frames_emitted", "Frames sent to clients.", ["transport"], registry=r)
        self.filler = Counter(
            f"{PREFIX}_filler_frames", "Frames that repeated the last image because video was late.", registry=r
        )
        self.dropped = Counter(
            f"{PREFIX}_dropped_frames",
            "Frames dropped: 'engine' (unplayed frames dropped by interrupt or close), 'slow_client' (websocket send "
            "queue full), 'track' (WebRTC track not reading).",
            ["reason"],
            registry=r,
        )
        self.latency = Histogram(
            f"{PREFIX}_latency_seconds",
            "Audio in -> the frame made from it sent out.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.fps = Gauge(f"{PREFIX}_output_fps", "Mean measured output frame rate over live sessions.", registry=r)
        self.queue_depth = Gauge(f"{PREFIX}_worker_queue_depth", "Window jobs waiting for the generator.", registry=r)
        self.errors = Counter(f"{PREFIX}_errors", "Errors reported to clients, by code.", ["code"], registry=r)
        self.audio_overflows = Counter(
            f"{PREFIX}_audio_overflows", "Audio refused because a client sent faster than real time.", registry=r
        )
        for t in transports:
            self.sessions.labels(t).set(0)
            self.connections.labels(t).set(0)
            self.frames.labels(t)

    def bind_quality(self, summary: Callable[[], dict]) -> None:
        """Adaptive-quality gauges, read at scrape time from `Engine.quality_summary()`."""
        r = self.registry
        g = Gauge(f"{PREFIX}_quality_reduced_sessions", "Live sessions running below full quality "
                  "(fewer steps or a smaller size) to keep up with real time.", registry=r)
        g.set_function(lambda: summary()["sessions_reduced"])
        g = Gauge(f"{PREFIX}_quality_min_steps", "Fewest sampling steps a live session uses now (NaN: none adaptive).",
                  registry=r)
        g.set_function(lambda: float("nan") if summary()["min_steps"] is None else summary()["min_steps"])
        g = Gauge(f"{PREFIX}_quality_changes", "Adaptive quality changes made by the live sessions.", registry=r)
        g.set_function(lambda: summary()["changes"])

    def bind(self, fps: Callable[[], float], queue_depth: Callable[[], float]) -> None:
        """Gauges computed at scrape time."""
        self.fps.set_function(fps)
        self.queue_depth.set_function(queue_depth)

    def frame(self, transport: str, frame: OutputFrame) -> None:
        self.frames.labels(transport).inc()
        if frame.filler:
            self.filler.inc()
        if frame.latency is not None:
            self.latency.observe(frame.latency)

    def error(self, code: str) -> None:
        self.errors.labels(code).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
