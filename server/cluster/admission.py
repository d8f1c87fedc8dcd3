"""Admission in cluster mode: a session is refused at once when no worker has a free slot, never queued."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..sessions import SessionManager, TooManySessions
from ..ws_protocol import CLOSE_CLUSTER_FULL

if TYPE_CHECKING:
    from .pool import WorkerPool

RETRY_AFTER_S = 5


class ClusterFull(TooManySessions):
    """Every slot of every live worker is taken: HTTP 503 with Retry-After, websocket close 4503."""

    http_status = 503
    close_code = CLOSE_CLUSTER_FULL
    code = "cluster_full"
    retry_after_s = RETRY_AFTER_S


class ClusterSessionManager(SessionManager):
    """`SessionManager` whose slots are also bounded by the free slots of the live workers."""

    pool: WorkerPool

    def reserve(self, transport: str, client: str = "") -> None:
        pending = self.active - self.pool.placed  # slots reserved here whose session is not placed yet
        if pending >= self.pool.free_slots():
            self.metrics.error("cluster_full")
            raise ClusterFull(cluster_full_message(self.pool))
        super().reserve(transport, client)


def cluster_full_message(pool: WorkerPool) -> str:
    alive = [w for w in pool.workers if w.alive]
    return (f"every session slot of the cluster is taken ({len(alive)} live worker(s), "
            f"{pool.options.sessions_per_worker} session(s) each); try again in {RETRY_AFTER_S} s")
