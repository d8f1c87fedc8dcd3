"""Prometheus series per worker, read at scrape time from what the pool's health checks last saw."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..metrics import PREFIX
from .pool import WorkerPool
from .remote_production import LinkCounters

SERIES = (  # name, help, key in the worker's info
    ("sessions", "Sessions on the worker (from every gateway).", "sessions"),
    ("window_seconds", "Mean window compute time of the worker's sessions (submit to last frame).", "window_s"),
    ("realtime_factor", "Seconds of video the worker made per second it was busy (above 1: faster than "
                        "real time).", "realtime_factor"),
    ("queue_depth", "Window jobs waiting on the worker.", "queue_depth"),
)


class WorkerCollector(Collector):
    """`infinitetalk_cluster_worker_*{worker,node}`: alive, capacity, sessions, window time, real-time factor;
    `infinitetalk_cluster_link_bytes_total{direction}`."""

    def __init__(self, pool: WorkerPool, link: LinkCounters) -> None:
        self.pool = pool
        self.link = link

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
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
        link = CounterMetricFamily(f"{PREFIX}_cluster_link_bytes", "Payload bytes between this gateway and the "
                                   "workers (audio to them; frames and their audio from them).", labels=["direction"])
        link.add_metric(["to_workers"], float(self.link.bytes_to_workers))
        link.add_metric(["from_workers"], float(self.link.bytes_from_workers))
        yield link
