"""Sequence-parallel workers: one session's model split over R processes of one node, as under torchrun.

Rank 0 is the `ClusterWorker` actor, ranks 1..R-1 are `RankFollower` actors running the backend's
follower loop. The group is reserved at once on one node with a placement group (`STRICT_PACK`) and
meets on 127.0.0.1 of that node (`MASTER_ADDR`, a free `MASTER_PORT` found there, `RANK`,
`WORLD_SIZE`; NCCL on GPUs, gloo on CPU). Ray does not restart a group (a new rank 0 could not rejoin
the old group's collectives): the pool removes a group that lost a process and makes it again.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from .options import NAMESPACE, ClusterOptions, ClusterUnavailable


@dataclass
class Followers:
    """The follower ranks of a group this gateway made: their pids, and their `follow` calls, which end
    only when rank 0 stops (or a follower dies)."""

    pids: list[int] = field(default_factory=list)
    calls: list[Any] = field(default_factory=list)

    def ended(self) -> bool:
        """A follower has stopped serving (died, or its rank 0 stopped)."""
        import ray

        done, _ = ray.wait(self.calls, num_returns=len(self.calls), timeout=0) if self.calls else ([], [])
        return bool(done)


async def create_group(actor_class: Any, name: str, index: int, o: ClusterOptions, backend_args: argparse.Namespace,
                       lease_s: float, timeout_s: float, followers_out: Followers) -> Any:
    """Rank 0's actor handle (found, if a gateway with the same options made the group already: then
    `followers_out` stays empty); `followers_out` gets the followers this call made."""
    import ray
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import (
        NodeAffinitySchedulingStrategy,
        PlacementGroupSchedulingStrategy,
    )

    from .worker_actor import RankFollower

    with contextlib.suppress(ValueError):
        return ray.get_actor(name, namespace=NAMESPACE)
    r = o.ranks_per_worker
    cpus, gpus = o.cpus_per_worker / r, o.gpus_per_worker / r
    if cpus or gpus:  # reserve every rank's share on one node at once
        bundle = {"CPU": cpus, "GPU": gpus}
        group = placement_group([{k: v for k, v in bundle.items() if v}] * r, strategy="STRICT_PACK",
                                name=f"{name}-group", lifetime="detached")
        try:
            await asyncio.wait_for(_await(group.ready()), timeout_s)
        except asyncio.TimeoutError as exc:
            raise ClusterUnavailable(f"no node has room for worker {index}'s {r} ranks ({bundle} each) within "
                                     f"{timeout_s:.0f} s (see `ray status`)") from exc

        def place(k: int) -> Any:
            return PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=k)
    else:  # nothing to reserve (trying the code path on CPU): every rank on this gateway's node
        node = ray.get_runtime_context().get_node_id()

        def place(k: int) -> Any:
            return NodeAffinitySchedulingStrategy(node, soft=False)

    def on(k: int) -> dict[str, Any]:
        return {"num_cpus": cpus, "num_gpus": gpus, "namespace": NAMESPACE, "lifetime": "detached",
                "scheduling_strategy": place(k)}

    followers = [ray.remote(RankFollower).options(name=f"{name}-rank{k}", **on(k)).remote() for k in range(1, r)]
    port = await asyncio.wait_for(_await(followers[0].free_port.remote()), timeout_s)
    followers_out.pids = [await asyncio.wait_for(_await(f.pid.remote()), timeout_s) for f in followers]
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(r), "LOCAL_RANK": "0"}
    followers_out.calls = [f.follow.remote(backend_args, {**env, "RANK": str(k)})
                           for k, f in enumerate(followers, start=1)]
    return actor_class.options(name=name, max_restarts=0, max_task_retries=0, **on(0)).remote(
        index, backend_args, o.sessions_per_worker, lease_s, {**env, "RANK": "0"})


async def remove_group(name: str, ranks: int) -> None:
    """Kill what is left of a group (rank 0 and the followers, by name) and free its placement group."""
    import ray
    from ray.util import get_placement_group, remove_placement_group

    for actor in [name] + [f"{name}-rank{k}" for k in range(1, ranks)]:
        with contextlib.suppress(ValueError):
            ray.kill(ray.get_actor(actor, namespace=NAMESPACE))
    with contextlib.suppress(ValueError):
        remove_placement_group(get_placement_group(f"{name}-group"))
    for _ in range(50):  # the names are free once Ray has noted the deaths
        if not _named_alive(name, ranks):
            return
        await asyncio.sleep(0.1)


def _named_alive(name: str, ranks: int) -> bool:
    import ray

    for actor in [name] + [f"{name}-rank{k}" for k in range(1, ranks)]:
        try:
            ray.get_actor(actor, namespace=NAMESPACE)
            return True
        except ValueError:
            continue
    return False


async def _await(ref: Any) -> Any:
    return await ref
