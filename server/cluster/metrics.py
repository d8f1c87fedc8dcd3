"""Prometheus series per worker, read at scrape time from what the pool's health checks last saw."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..metrics import PREFIX
from .pool import WorkerPool

SERIES = (  # name, help, key in the worker's info
    ("sessions", "Sessions on the worker (from every gateway).", "sessions"),
    ("window_seconds", "Mean window compute time of the worker's sessions (submit to last frame).", "window_s"),
    ("realtime_factor", "Seconds of video the worker made per second it was busy (above 1: faster than "
                        "real time).", "realtime_factor"),
    ("queue_depth", "Window jobs waiting on the worker.", "queue_depth"),
)


class WorkerCollector(Collector):
    """`infinitetalk_cluster_worker_*{worker,node}`: alive, capacity, sessions, window time, real-time factor."""

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["worker", "node"]
        name = f"{PREFIX}_cluster_worker"
        alive = GaugeMetricFamily(f"{name}_alive", "1 while the worker answers its health checks.", labels=labels)
        capacity = GaugeMetricFamily(f"{name}_capacity", "Session slots of the worker.", labels=labels)
        families = {key: GaugeMetricFamily(f"{name}_{suffix}", doc, labels=labels) for suffix, doc, key in SERIES}
        for w in self.pool.workers:
            lv = [str(w.index), str(w.info.get("node", ""))]
            alive.add_metric(lv, 1.0 if w.alive else 0.0)
            capacity.add_metric(lv, float(self.pool.options.sessions_per_worker))
            for key, family in families.items():
                value = w.info.get(key)
                family.add_metric(lv, float("nan") if value is None or not w.alive else float(value))
        yield alive
        yield capacity
        yield from families.values()
