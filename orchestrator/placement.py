"""Where a Ray pool's actors go: the CPU share one actor reserves on a cluster
(:func:`fit_cpus`) and whether a node can host a pool (:func:`can_host`). Used by
:class:`~orchestrator.ray_executor.RayExecutor`."""

from __future__ import annotations

from tinyfleet_core.errors import WorkerUnavailable
from workers.base import PoolOptions

__all__ = ["POOL_SLOTS", "MIN_CPUS", "fit_cpus", "can_host"]


POOL_SLOTS = 16
"""On a cluster with CPUs, one pool actor reserves at most ``1 / POOL_SLOTS`` of them, so the
pools of every ladder rung (and their verifiers) fit on a small head at once."""
MIN_CPUS = 0.01
"""The smallest CPU share a pool actor is given; under it the cluster counts as full."""


def fit_cpus(asked: float, replicas: int, total: float, available: float) -> float:
    """The CPUs one actor of a pool reserves on a cluster with ``total`` CPUs of which
    ``available`` are free: what the pool asked, at most ``total / POOL_SLOTS``, and, when the
    free CPUs cannot hold every replica at that, half the free share per replica (so later
    pools still fit). WorkerUnavailable at once (never a placement wait that cannot end)
    when not even :data:`MIN_CPUS` per replica is free."""
    share = min(asked, total / POOL_SLOTS)
    if share * replicas > available:
        share = available / (2 * replicas)
    share = float(int(share * 1000) / 1000)  # Ray's resource precision; never above what is free
    if share < MIN_CPUS:
        raise WorkerUnavailable(
            f"the Ray cluster's CPUs are all reserved ({available:g} of {total:g} free): a pool needs "
            f"{MIN_CPUS:g} CPU per replica for {replicas} replica(s); stop other jobs' actors, add CPUs "
            "(ray start --num-cpus=N) or run with --address local"
        )
    return share


def can_host(opts: PoolOptions, resources: dict[str, float]) -> bool:
    """Whether a node with these total resources can host one actor of a pool placed with ``opts``."""
    asks = {**opts.resources, **({"GPU": opts.num_gpus} if opts.num_gpus > 0 else {}), **({"CPU": opts.num_cpus} if opts.num_cpus > 0 else {})}
    return all(resources.get(k, 0.0) >= v for k, v in asks.items())
