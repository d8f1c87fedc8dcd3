"""The worker: a Ray actor owning one model instance and the model side of its sessions.

Why here (server/) and not in streaming/: the actor is a network endpoint of a distributed runtime
(Ray carries its calls between machines), and streaming/ has no network code. All it does is hold a
`streaming.production_host.ProductionHost` (plain engine code, tested without Ray) and answer the
gateway's calls with plain data. The class is plain Python; `server.cluster.pool` wraps it with
`ray.remote` when a cluster is used, so importing this module does not import Ray.

Replies are plain values, never exceptions across the wire: `None` from `feed`/`take` means "no such
session here" (this worker restarted, or the session expired), which the gateway reports as a lost worker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
from typing import Any

from streaming.generator import Avatar
from streaming.production_host import HostFull, Message, ProductionHost, UnknownSession
from streaming.session_settings import SessionSettings

log = logging.getLogger(__name__)

EXPIRE_EVERY_S = 1.0


class ClusterWorker:
    """One worker. `backend_args`: the gateway's parsed `serve` options, so every model option of
    `serve` builds the same backend here (`streaming.backends.flags.backend_from_args`)."""

    def __init__(self, worker_id: int, backend_args: argparse.Namespace, capacity: int,
                 lease_s: float = 15.0, rank_env: dict[str, str] | None = None) -> None:
        """rank_env: rank 0 of a sequence-parallel group (`RankFollower`s are the other ranks): the
        torch.distributed rendezvous (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), set before the model
        is built, as torchrun would."""
        from streaming.backends.flags import backend_from_args

        os.environ.update(rank_env or {})
        logging.basicConfig(level=getattr(backend_args, "log_level", "info").upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        backend, options = backend_from_args(backend_args)
        generator = backend.create(options)
        self.worker_id = worker_id
        self.host = ProductionHost(generator, capacity, lease_s=lease_s)
        self._expirer: asyncio.Task | None = None

    async def ready(self) -> dict[str, Any]:
        """The worker is built. -> `describe()`."""
        return await self.info()

    def _ensure_expirer(self) -> None:
        """Expire sessions whose gateway went away; started by the first call (also after a restart,
        when Ray built this worker again: the gateways' health checks call `info` every second)."""
        if self._expirer is None:
            self._expirer = asyncio.create_task(self._expire_loop())

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(EXPIRE_EVERY_S)
            try:
                await self.host.expire()
            except Exception:  # noqa: BLE001 - the loop must outlive one bad close
                log.exception("expiring sessions failed")

    def describe(self) -> dict[str, Any]:
        """What `/api/cluster` shows of this worker, plus its backend (the gateway's sessions need it)."""
        import ray

        ctx = ray.get_runtime_context()
        g = self.host.generator
        return {
            "id": self.worker_id,
            "node": ctx.get_node_id(),
            "node_ip": ray.util.get_node_ip_address(),
            "pid": os.getpid(),
            "gpus": [str(g) for g in ctx.get_accelerator_ids().get("GPU", [])],
            "world_size": _world_size(),
            "backend": {"name": g.name, "description": g.description, "window": g.window},
            **self.host.info(),
        }

    async def info(self) -> dict[str, Any]:
        self._ensure_expirer()
        return self.describe()

    async def open_session(self, session_id: str, avatar: Avatar, settings: SessionSettings,
                           peer_now: float) -> dict[str, Any]:
        """{"size": (w, h)} or {"error": code, "message": ...} (code "worker_full" or the session's)."""
        from streaming.session_settings import SessionError

        self._ensure_expirer()
        try:
            return {"size": await self.host.open(session_id, avatar, settings, peer_now)}
        except HostFull as exc:
            return {"error": "worker_full", "message": str(exc)}
        except SessionError as exc:
            return {"error": exc.code, "message": exc.message}
        except ValueError as exc:
            return {"error": "bad_request", "message": str(exc)}

    async def feed(self, session_id: str, messages: list[Message]) -> bool | None:
        try:
            self.host.feed(session_id, messages)
        except UnknownSession:
            return None
        return True

    async def take(self, session_id: str, wait_s: float, linger_s: float = 0.0) -> tuple[list[Message], Any] | None:
        try:
            return await self.host.take(session_id, wait_s, linger_s)
        except UnknownSession:
            return None

    async def close_session(self, session_id: str) -> bool:
        return await self.host.close(session_id)

    async def stop(self) -> None:
        if self._expirer is not None:
            self._expirer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expirer
        await self.host.shutdown()


class RankFollower:
    """Rank k > 0 of a worker's sequence-parallel group: loads its part of the model and serves rank 0's
    calls (`Backend.follow`, as under torchrun) until rank 0 stops. Placed on rank 0's node."""

    def pid(self) -> int:
        return os.getpid()

    def free_port(self) -> int:
        """A free TCP port on this node, for the group's rendezvous on 127.0.0.1."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def follow(self, backend_args: argparse.Namespace, rank_env: dict[str, str]) -> int:
        from streaming.backends.flags import backend_from_args

        os.environ.update(rank_env)
        backend, options = backend_from_args(backend_args)
        if backend.follow is None:
            raise ValueError(f"backend {backend.name} has no sequence parallelism")
        served = backend.follow(options)
        log.info("rank %s served %s model calls", rank_env.get("RANK"), served)
        return int(served or 0)


def _world_size() -> int:
    """Processes in this worker's model group (1 without sequence parallelism)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
