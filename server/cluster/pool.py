"""The gateway's view of the workers: start or join Ray, create the worker actors, watch them, place sessions.

Workers are named detached actors in one Ray namespace, named after the model options and slots
(`worker-<digest>-<i>`), so every gateway started with the same options shares the same workers
(several gateways behind a load balancer); each worker enforces its own slots, and a gateway that
finds one full tries the next. Ray restarts a worker whose process dies (`max_restarts=-1`); its
sessions are lost (their gateways close them with `worker_lost`) and it rejoins the pool when it
answers again. Without a fixed `--workers`, nodes that join add workers while the gateway runs.
Every call to a worker has a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from streaming.generator import Avatar
from streaming.session_settings import SessionError, SessionSettings

from .admission import ClusterFull, cluster_full_message
from .groups import Followers, create_group, remove_group
from .options import NAMESPACE, ClusterOptions, ClusterUnavailable, require_ray

log = logging.getLogger(__name__)

HEALTH_EVERY_S = 1.0
GROW_EVERY_S = 5.0  # without --workers: how often to look for nodes that joined
OPEN_TIMEOUT_S = 30.0  # a worker preparing an avatar (image encoders on the GPU) answers well within it


@dataclass
class WorkerSlot:
    """One worker as this gateway sees it. `sessions`: the ids this gateway placed there."""

    index: int
    handle: Any
    info: dict[str, Any] = field(default_factory=dict)
    alive: bool = False
    sessions: set[str] = field(default_factory=set)
    started: bool = False  # it answered `ready` once (a worker still being placed is not health-checked)
    followers: Followers = field(default_factory=Followers)  # a sequence-parallel group's other ranks

    def load(self) -> int:
        """Sessions on the worker: its own count (all gateways), or ours if that is more recent."""
        return max(len(self.sessions), int(self.info.get("sessions", 0)) + int(self.info.get("opening", 0)))

    def public(self, capacity: int) -> dict[str, Any]:
        """The `/api/cluster` entry."""
        i = self.info
        ranks = {"rank_pids": [i.get("pid"), *self.followers.pids]} if self.followers.pids else {}
        return {**ranks, "id": self.index, "node": i.get("node"), "node_ip": i.get("node_ip"), "pid": i.get("pid"),
                "gpus": i.get("gpus", []),
                "sessions": i.get("sessions", len(self.sessions)), "capacity": capacity, "alive": self.alive,
                "queue_depth": i.get("queue_depth", 0), "busy_seconds": i.get("busy_seconds", 0.0)}


def connect_ray(options: ClusterOptions) -> None:
    """Start a local Ray (loopback only) or join one; ClusterUnavailable with one line when it cannot."""
    require_ray(options.local)
    import ray

    if ray.is_initialized():
        return
    if options.local:
        ray.init(num_cpus=max(1.0, options.workers * options.cpus_per_worker), namespace=NAMESPACE,
                 object_store_memory=options.object_store_mb * 1024 * 1024, include_dashboard=False,
                 _node_ip_address="127.0.0.1", log_to_driver=True, configure_logging=False)
        return
    address = options.address or "auto"
    if address != "auto" and not address.startswith("ray://"):
        check_reachable(address)
    try:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=True, configure_logging=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ClusterUnavailable(f"cannot join the Ray cluster at {address}: {first}") from exc


def check_reachable(address: str, timeout_s: float = 3.0) -> None:
    """A TCP connect to the head's GCS port, so a wrong address fails in seconds with a clear line."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ClusterUnavailable(f"--cluster {address}: give the Ray head as HOST:PORT (e.g. 10.0.0.5:6379), "
                                 "auto, or local:N")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ClusterUnavailable(f"cannot reach a Ray head at {address}: {exc.strerror or exc} "
                                 "(start one with `ray start --head`)") from exc


def node_resources() -> list[dict[str, float]]:
    import ray

    return [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]


def check_fits(options: ClusterOptions) -> int:
    """How many workers to start: options.workers, or as many as the nodes fit. ClusterUnavailable when
    no node could hold one worker (e.g. more GPUs per worker than any node has)."""
    nodes = node_resources()
    gpus = max((n.get("GPU", 0.0) for n in nodes), default=0.0)
    if options.gpus_per_worker > gpus:
        raise ClusterUnavailable(f"--gpus-per-worker {options.gpus_per_worker:g}: no node of the cluster has that "
                                 f"many GPUs (the most on one node is {gpus:g})")
    cpus = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
    if options.cpus_per_worker > cpus:
        raise ClusterUnavailable(f"--cpus-per-worker {options.cpus_per_worker:g}: no node of the cluster has that "
                                 f"many CPUs (the most on one node is {cpus:g})")
    if options.workers:
        return options.workers

    def fits(n: dict[str, float]) -> int:
        by_cpu = int(n.get("CPU", 0) // options.cpus_per_worker) if options.cpus_per_worker else 64
        by_gpu = int(n.get("GPU", 0) // options.gpus_per_worker) if options.gpus_per_worker else 64
        return min(by_cpu, by_gpu)

    return max(1, sum(fits(n) for n in nodes))


def worker_digest(backend_args: argparse.Namespace, options: ClusterOptions) -> str:
    """Names the workers of one model configuration, so gateways with the same options share them."""
    from streaming.backends.flags import backend_from_args

    backend, backend_options = backend_from_args(backend_args)
    key = (f"{backend.name}|{backend_options!r}|{options.sessions_per_worker}|{options.gpus_per_worker}|"
           f"{options.ranks_per_worker}")
    return hashlib.sha1(key.encode()).hexdigest()[:10]


class WorkerPool:
    """See the module docstring."""

    def __init__(self, options: ClusterOptions, backend_args: argparse.Namespace,
                 start_timeout_s: float = 300.0, lease_s: float = 15.0) -> None:
        self.options = options
        self.backend_args = backend_args
        self.start_timeout_s = start_timeout_s
        self.lease_s = lease_s
        self.workers: list[WorkerSlot] = []
        self.backend: dict[str, Any] = {}
        self._health: asyncio.Task | None = None
        self._starting: set[asyncio.Task] = set()
        self._digest = ""
        self._actor_class: Any = None
        self._rebuilding: dict[int, asyncio.Task] = {}  # sequence-parallel workers being made again

    @property
    def placed(self) -> int:
        return sum(len(w.sessions) for w in self.workers)

    def free_slots(self) -> int:
        cap = self.options.sessions_per_worker
        return sum(max(0, cap - w.load()) for w in self.workers if w.alive)

    async def start(self) -> None:
        """Connect, create (or find) the workers and wait until each answers. ClusterUnavailable otherwise."""
        connect_ray(self.options)  # on this thread: Ray's driver wants the main thread (signal handlers)
        import ray

        count = check_fits(self.options)
        self._digest = worker_digest(self.backend_args, self.options)
        self._actor_class = ray.remote(_worker_class())
        o = self.options
        t0 = time.monotonic()
        for i in range(count):
            followers = Followers()
            self.workers.append(WorkerSlot(i, await self._create(i, followers), started=True, followers=followers))
        for w in self.workers:
            left = self.start_timeout_s - (time.monotonic() - t0)
            try:
                w.info = await asyncio.wait_for(_await(w.handle.ready.remote()), max(1.0, left))
            except asyncio.TimeoutError as exc:
                raise ClusterUnavailable(
                    f"worker {w.index} did not start within {self.start_timeout_s:.0f} s: the cluster lacks "
                    f"{o.cpus_per_worker:g} CPU / {o.gpus_per_worker:g} GPU free for it (see `ray status`)") from exc
            except Exception as exc:  # noqa: BLE001 - the worker's constructor failed (bad weights, ...)
                raise ClusterUnavailable(f"worker {w.index} failed to start: {_first_line(exc)}") from exc
            w.alive = True
        self.backend = self.workers[0].info["backend"]
        log.info("cluster: %d worker(s) ready (%s, %d session(s) each)", count, self.backend["name"],
                 o.sessions_per_worker)
        self._health = asyncio.create_task(self._health_loop(), name="cluster-health")

    async def _create(self, i: int, followers: Followers | None = None) -> Any:
        """Worker i's actor: created, or found if a gateway with the same options made it already.
        followers: gets a sequence-parallel group's other ranks."""
        o = self.options
        if o.ranks_per_worker > 1:
            return await create_group(self._actor_class, f"worker-{self._digest}-{i}", i, o, self.backend_args,
                                      self.lease_s, self.start_timeout_s, followers or Followers())
        return self._actor_class.options(
            name=f"worker-{self._digest}-{i}", namespace=NAMESPACE, get_if_exists=True, lifetime="detached",
            num_cpus=o.cpus_per_worker, num_gpus=o.gpus_per_worker, max_restarts=-1, max_task_retries=0,
            scheduling_strategy="SPREAD",
        ).remote(i, self.backend_args, o.sessions_per_worker, self.lease_s)

    async def grow(self) -> int:
        """Without a fixed --workers: add the workers that nodes which joined since can hold. A new worker
        counts once it has started (in the background, within the start timeout). -> workers added."""
        try:
            target = await asyncio.to_thread(check_fits, self.options)
        except ClusterUnavailable:
            return 0
        added = 0
        for i in range(len(self.workers), target):
            followers = Followers()
            w = WorkerSlot(i, await self._create(i, followers), followers=followers)
            self.workers.append(w)
            self._starting.add(asyncio.create_task(self._start_later(w), name=f"cluster-worker-{i}-start"))
            added += 1
        if added:
            log.info("cluster: the nodes hold %d worker(s) now: starting %d more", target, added)
        return added

    async def _start_later(self, w: WorkerSlot) -> None:
        try:
            w.info = await asyncio.wait_for(_await(w.handle.ready.remote()), self.start_timeout_s)
        except Exception as exc:  # noqa: BLE001 - it stays out of the pool; a later grow finds it again
            log.warning("cluster: new worker %d did not start: %s", w.index, _first_line(exc))
            self.workers.remove(w)
            return
        finally:
            self._starting.discard(asyncio.current_task())
        w.started = w.alive = True
        log.info("cluster: worker %d joined the pool (node %s)", w.index, w.info.get("node"))

    async def refresh(self) -> None:
        """Ask every started worker how it is (each with the RPC timeout); no answer = not alive."""
        await asyncio.gather(*(self._refresh_one(w) for w in self.workers if w.started))

    async def _refresh_one(self, w: WorkerSlot) -> None:
        if w.index in self._rebuilding:
            return
        try:
            w.info = await asyncio.wait_for(_await(w.handle.info.remote()), self.options.rpc_timeout_s)
            if w.followers.ended():  # a follower died: rank 0 waits in a collective that never completes
                raise FollowerLost(f"a follower rank of worker {w.index} stopped")
            if not w.alive:
                log.warning("cluster: worker %d is back (pid %s)", w.index, w.info.get("pid"))
            w.alive = True
        except Exception as exc:  # noqa: BLE001 - dead, restarting or unreachable
            if w.alive:
                log.warning("cluster: worker %d is not answering: %s", w.index, _first_line(exc))
            w.alive = False
            # Ray does not restart a sequence-parallel group: the pool makes it again
            if self.options.ranks_per_worker > 1 and (_died(exc) or isinstance(exc, FollowerLost)):
                self._rebuilding[w.index] = asyncio.create_task(self._rebuild(w), name=f"cluster-rebuild-{w.index}")

    async def _rebuild(self, w: WorkerSlot) -> None:
        """A sequence-parallel worker lost a process: remove the whole group, make it again, wait for it."""
        name = f"worker-{self._digest}-{w.index}"
        try:
            log.warning("cluster: worker %d (a %d-rank group) died: making the group again", w.index,
                        self.options.ranks_per_worker)
            await remove_group(name, self.options.ranks_per_worker)
            w.followers = Followers()
            w.handle = await create_group(self._actor_class, name, w.index, self.options, self.backend_args,
                                          self.lease_s, self.start_timeout_s, w.followers)
            w.info = await asyncio.wait_for(_await(w.handle.ready.remote()), self.start_timeout_s)
            w.alive = True
            log.warning("cluster: worker %d is back (pid %s)", w.index, w.info.get("pid"))
        except Exception as exc:  # noqa: BLE001 - tried again at the next health check
            log.warning("cluster: worker %d could not be made again: %s", w.index, _first_line(exc))
        finally:
            self._rebuilding.pop(w.index, None)

    async def _health_loop(self) -> None:
        last_grow = time.monotonic()
        while True:
            await self.refresh()
            if not self.options.workers and time.monotonic() - last_grow >= GROW_EVERY_S:
                last_grow = time.monotonic()
                try:
                    await self.grow()
                except Exception as exc:  # noqa: BLE001 - the pool goes on with the workers it has
                    log.warning("cluster: could not add workers: %s", _first_line(exc))
            await asyncio.sleep(HEALTH_EVERY_S)

    def candidates(self) -> list[WorkerSlot]:
        """Live workers with a free slot, least loaded first."""
        cap = self.options.sessions_per_worker
        return sorted((w for w in self.workers if w.alive and w.load() < cap), key=lambda w: (w.load(), w.index))

    async def open(self, session_id: str, avatar: Avatar, settings: SessionSettings,
                   peer_now: float) -> tuple[WorkerSlot, tuple[int, int]]:
        """Start the model side of a session on the least-loaded worker that takes it. ClusterFull when none
        does; SessionError when the worker could not start it (bad avatar, backend error)."""
        for w in self.candidates():
            w.sessions.add(session_id)
            try:
                reply = await asyncio.wait_for(
                    _await(w.handle.open_session.remote(session_id, avatar, settings, peer_now)), OPEN_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - the worker died or hangs: try the next one
                w.sessions.discard(session_id)
                log.warning("cluster: worker %d could not open a session: %s", w.index, _first_line(exc))
                continue
            if "size" in reply:
                return w, tuple(reply["size"])
            w.sessions.discard(session_id)
            if reply["error"] != "worker_full":
                raise SessionError(reply["error"], reply["message"])
        raise ClusterFull(cluster_full_message(self))

    def forget(self, w: WorkerSlot, session_id: str) -> None:
        """The session closed (on the worker too, or the worker is gone): its slot is free now, not at the
        next health check."""
        if session_id in w.sessions:
            w.sessions.discard(session_id)
            w.info["sessions"] = max(0, int(w.info.get("sessions", 0)) - 1)

    def describe(self) -> dict[str, Any]:
        cap = self.options.sessions_per_worker
        return {"workers": [w.public(cap) for w in self.workers]}

    async def stop(self) -> None:
        """Stop watching; a local cluster is shut down with its workers, a joined one keeps them."""
        tasks = [t for t in [self._health, *self._starting, *self._rebuilding.values()] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        import ray

        if self.options.local and ray.is_initialized():
            for w in self.workers:
                try:
                    await asyncio.wait_for(_await(w.handle.stop.remote()), self.options.rpc_timeout_s)
                except Exception:  # noqa: BLE001 - shutting down anyway
                    pass
            await asyncio.to_thread(ray.shutdown)


async def _await(ref: Any) -> Any:
    """An ObjectRef as a coroutine (asyncio.wait_for wants one)."""
    return await ref


class FollowerLost(RuntimeError):
    """A sequence-parallel worker's follower rank stopped while its rank 0 still answers."""


def _died(exc: BaseException) -> bool:
    """The actor is dead for good (not restarting, not merely slow)."""
    from ray.exceptions import ActorDiedError

    return isinstance(exc, ActorDiedError)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1][:300] if text else type(exc).__name__


def _worker_class() -> type:
    from .worker_actor import ClusterWorker

    return ClusterWorker
