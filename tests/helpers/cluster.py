"""A real local Ray cluster (two simulated nodes on loopback) and a gateway over it, for the cluster tests."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

from aiohttp import web

# Read by Ray when it is imported: with 0, every Ray address (and every node it starts) is 127.0.0.1.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
from ray.cluster_utils import Cluster  # noqa: E402 - after the variable above

from server.avatars import AvatarStore, UploadLimits  # noqa: E402
from server.cli import parser  # noqa: E402
from server.cluster.gateway import build_cluster_app, start_cluster_engine  # noqa: E402
from server.cluster.options import ClusterOptions  # noqa: E402
from server.config import ServerConfig  # noqa: E402
from server.context import CONTEXT  # noqa: E402

from .server_app import LiveServer, free_port  # noqa: E402

# Every test of a module uses these options, so they share the same two workers (named actors).
WORKERS = 2
SESSIONS_PER_WORKER = 3
NODE_STORE = 128 * 1024 * 1024  # object store per simulated node
LEASE_S = 5.0  # the workers close a session whose gateway took nothing for this long (default 15 s)


@contextlib.contextmanager
def two_node_ray() -> Iterator[Cluster]:
    """Head + one more node, one CPU each, every address on 127.0.0.1; this process connected.
    `add_node()` adds one more of the same kind."""
    import ray

    from server.cluster.pool import NAMESPACE

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "object_store_memory": NODE_STORE, "include_dashboard": False})
    try:
        add_node(cluster)
        ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def add_node(cluster: Cluster) -> None:
    cluster.add_node(num_cpus=1, object_store_memory=NODE_STORE)


@contextlib.asynccontextmanager
async def gateway(address: str, workers: int = WORKERS, **config: object) -> AsyncIterator[LiveServer]:
    """The cluster gateway (lite workers) on 127.0.0.1:<free port>; its own limits out of the way
    unless `config` sets them, so the cluster's slots are what refuses. workers=0: as many as the
    nodes hold, growing when nodes join."""
    # 256x256 lite frames: five sessions at 25 fps fit this 2-core machine beside the gateway and clients
    args = parser().parse_args(["serve", "--backend", "lite", "--lite-width", "256", "--lite-height", "256",
                                "--log-level", "warning"])
    options = ClusterOptions(address, workers, sessions_per_worker=SESSIONS_PER_WORKER, rpc_timeout_s=3.0)
    engine = await start_cluster_engine(options, args, start_timeout_s=60, lease_s=LEASE_S)
    from streaming.avatars import default_avatar

    store = AvatarStore({"astronaut": default_avatar}, None, "astronaut", UploadLimits())
    cfg = replace(ServerConfig(port=0, max_sessions=16, max_sessions_per_client=16), **config)
    app = build_cluster_app(cfg, engine, store, owns_engine=True)
    runner = web.AppRunner(app, shutdown_timeout=5, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", app[CONTEXT], runner)
    finally:
        await runner.cleanup()
