"""Resource accounting for the fault, soak and fuzz tests: what must be gone once every client left.

Counted: asyncio tasks, Python threads (pool workers may grow up to their pool's size: that is
reuse, not a leak), aiortc peer connections not closed, engine sessions, session slots, worker
jobs, and the server's open connections (websockets and peers).
"""

from __future__ import annotations

import asyncio
import gc
import threading
from dataclasses import dataclass

POOL_THREAD_PREFIXES = ("jpeg_", "asyncio_", "ThreadPoolExecutor-", "avatar_upload_")
POOL_LIMIT = 40  # jpeg pool (2) + asyncio's default executor (min(32, cpus + 4)) + slack


@dataclass
class Snapshot:
    tasks: set[asyncio.Task]
    threads: set[threading.Thread]

    @property
    def counts(self) -> dict[str, int]:
        return {"tasks": len(self.tasks), "threads": len(self.threads)}


def snapshot() -> Snapshot:
    return Snapshot(set(asyncio.all_tasks()), set(threading.enumerate()))


def open_peer_connections() -> int:
    """aiortc RTCPeerConnection objects still alive and not closed (server or client side)."""
    from aiortc import RTCPeerConnection

    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is RTCPeerConnection and o.connectionState != "closed")


def _leaks(srv, before: Snapshot) -> list[str]:
    ctx = srv.ctx
    problems = []
    now = snapshot()
    me = asyncio.current_task()
    new_tasks = [t for t in now.tasks - before.tasks if t is not me and not t.done()]
    if new_tasks:
        problems.append(f"{len(new_tasks)} task(s) left: {sorted(t.get_name() for t in new_tasks)[:8]}")
    new_threads = [t for t in now.threads - before.threads if t.is_alive()]
    strays = [t.name for t in new_threads if not t.name.startswith(POOL_THREAD_PREFIXES)]
    if strays or len(now.threads) > len(before.threads) + POOL_LIMIT:
        problems.append(f"threads left: {strays or [t.name for t in new_threads]}")
    if ctx.connections:
        problems.append(f"{len(ctx.connections)} connection(s) still registered: {[type(c).__name__ for c in ctx.connections]}")
    if ctx.engine.sessions:
        problems.append(f"engine sessions left: {list(ctx.engine.sessions)}")
    if ctx.sessions.active:
        problems.append(f"{ctx.sessions.active} session slot(s) still held")
    if ctx.engine.worker.queue_depth:
        problems.append(f"{ctx.engine.worker.queue_depth} worker job(s) queued")
    return problems


async def assert_no_leaks(srv, before: Snapshot, timeout: float = 5.0, peers: bool = True) -> dict[str, int]:
    """Wait up to `timeout` for everything to be released; fail naming what is left. Returns counts."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        problems = _leaks(srv, before)
        open_pcs = open_peer_connections() if peers and not problems else 0
        if open_pcs:
            problems.append(f"{open_pcs} RTCPeerConnection(s) not closed")
        if not problems:
            break
        if loop.time() > end:
            raise AssertionError("resources not released: " + "; ".join(problems))
        await asyncio.sleep(0.1)
    after = snapshot()
    return {"tasks_before": len(before.tasks), "tasks_after": len(after.tasks),
            "threads_before": len(before.threads), "threads_after": len(after.threads),
            "peer_connections_open": 0, "sessions": len(srv.ctx.engine.sessions),
            "connections": len(srv.ctx.connections)}
