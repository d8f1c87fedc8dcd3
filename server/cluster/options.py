"""`serve --cluster` options: where the Ray cluster is, and how workers are sized. No Ray import here."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

INSTALL_HINT = "pip install 'infinitetalk-live[cluster]'"
LOCAL_PREFIX = "local:"
NAMESPACE = "infinitetalk-live"  # the Ray namespace of the workers (named actors, shared by gateways)


class ClusterUnavailable(RuntimeError):
    """The cluster cannot be used (Ray missing, unreachable, too small): one line for the operator."""


@dataclass(frozen=True)
class ClusterOptions:
    """address: None = start a local Ray with `workers` workers; "auto" or HOST:PORT / ray://... = join.
    workers: when joining, 0 = as many as the nodes hold, and more as nodes join.

    gpus_per_worker: GPUs each worker actor holds (0: CPU backends such as lite).
    cpus_per_worker: CPUs Ray reserves per worker (it places at most one worker per CPU reserved).
    sessions_per_worker: session slots per worker (its model side; windows are batched across them).
    ranks_per_worker: processes per worker: with the backend's --sequence-parallel, one session's model
        is split over them (torch.distributed; NCCL on GPUs, gloo on CPU), all placed on one node with a
        Ray placement group; each rank holds gpus_per_worker / ranks_per_worker GPUs.
    object_store_mb: object store of a local Ray (frames cross it).
    rpc_timeout_s: the longest any call to a worker may take before the worker counts as lost.
    """

    address: str | None
    workers: int
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    sessions_per_worker: int = 4
    ranks_per_worker: int = 1
    object_store_mb: int = 256
    rpc_timeout_s: float = 5.0

    @property
    def local(self) -> bool:
        return self.address is None


def add_cluster_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cluster mode (docs/cluster.md; needs the [cluster] extra)")
    g.add_argument("--cluster", default=None, metavar="local:N|auto|ADDRESS",
                   help="run sessions on Ray workers: local:N starts Ray here with N workers; auto or ADDRESS "
                        "(host:port of a head started with `ray start --head`) joins a running cluster")
    g.add_argument("--workers", type=int, default=None,
                   help="workers to start when joining a cluster (default: one per node that fits one)")
    g.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs each worker holds (default 0)")
    g.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs Ray reserves per worker (default 1)")
    g.add_argument("--sessions-per-worker", type=int, default=4, help="session slots per worker (default 4)")
    g.add_argument("--ranks-per-worker", type=int, default=None,
                   help="processes per worker for --sequence-parallel (default: --gpus-per-worker; 2+ on CPU "
                        "runs the group over gloo)")


CLUSTER_DEFAULTS = {"workers": None, "gpus_per_worker": 0.0, "cpus_per_worker": 1.0, "sessions_per_worker": 4,
                    "ranks_per_worker": None}


def cluster_only_flags(args: argparse.Namespace) -> list[str]:
    """The cluster flags given (not at their defaults), for refusing them without --cluster."""
    return [f"--{name.replace('_', '-')}" for name, default in CLUSTER_DEFAULTS.items()
            if getattr(args, name, default) != default]


def cluster_options(args: argparse.Namespace) -> ClusterOptions | None:
    """The options for `args` (None without --cluster); ValueError with a one-line reason when malformed."""
    spec = getattr(args, "cluster", None)
    if spec is None:
        return None
    spec = spec.strip()
    if args.sessions_per_worker < 1:
        raise ValueError("--sessions-per-worker must be >= 1")
    if args.gpus_per_worker < 0 or args.cpus_per_worker < 0:
        raise ValueError("--gpus-per-worker and --cpus-per-worker must be >= 0")
    common = dict(gpus_per_worker=args.gpus_per_worker, cpus_per_worker=args.cpus_per_worker,
                  sessions_per_worker=args.sessions_per_worker, ranks_per_worker=ranks_per_worker(args))
    if spec.startswith(LOCAL_PREFIX):
        count = spec[len(LOCAL_PREFIX):]
        if not count.isdigit() or not 1 <= int(count) <= 64:
            raise ValueError(f"--cluster {spec}: N in local:N must be a number of workers from 1 to 64")
        if args.workers is not None:
            raise ValueError("--workers is for joining a cluster; with local:N, N is the number of workers")
        return ClusterOptions(None, int(count), **common)
    if not spec:
        raise ValueError("--cluster needs local:N, auto or the address of a Ray head (host:port)")
    if args.workers is not None and args.workers < 1:
        raise ValueError("--workers must be >= 1")
    return ClusterOptions(spec, args.workers or 0, **common)


def ranks_per_worker(args: argparse.Namespace) -> int:
    """Processes per worker: 1, or with --sequence-parallel --ranks-per-worker (default: one per GPU)."""
    split = bool(getattr(args, "sequence_parallel", False))
    ranks = args.ranks_per_worker
    if ranks is not None and ranks > 1 and not split:
        raise ValueError("--ranks-per-worker splits one session's model over processes: it needs --sequence-parallel")
    if not split:
        return 1
    if ranks is None:
        ranks = int(args.gpus_per_worker)
    if ranks < 2:
        raise ValueError("--sequence-parallel in a cluster needs 2 or more ranks per worker: --gpus-per-worker N "
                         "(one rank per GPU) or --ranks-per-worker N")
    if args.gpus_per_worker and args.gpus_per_worker % ranks:
        raise ValueError(f"--gpus-per-worker {args.gpus_per_worker:g} does not divide over {ranks} ranks")
    return ranks


def require_ray(local: bool = False) -> None:
    """ClusterUnavailable (one line: what to install) when Ray is not installed. local: keep every
    address of the Ray this process starts on 127.0.0.1 (Ray reads the variable when imported)."""
    if local:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        raise ClusterUnavailable(f"--cluster needs Ray, which is not installed: {INSTALL_HINT}") from exc
