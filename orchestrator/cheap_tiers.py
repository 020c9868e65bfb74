"""Cheap tiers stay cheap: a Ray pool whose work per item costs less than sending it to an actor
moves into the driver.

Propagation, exact solvers and the heuristics answer a sudoku or a maze in well under a
millisecond, while a round trip to a Ray actor (pickling the jobs and the answers, the call)
costs more than that per item. The Ray executor measures both on a pool's first batches
(:class:`CostProbe`: the answers' own worker seconds against the batches' wall time), and when
the work per item is under :data:`INLINE_BELOW_S` and smaller than what dispatching it costs,
the pool's later batches run on a copy of the worker in the driver's thread pool (the pool's
one batcher stays; only where a batch runs changes). Each answer that ran there says so
(``Attempt.info["ran_in"] == "driver"``), and the executor announces the move once
(a ``pool_inlined`` executor event with both measurements).

A pool that asks for a GPU or custom Ray resources (it was placed on purpose), or whose
``PoolOptions.auto_inline`` is False (a worker that must run isolated), is never moved.
"""

from __future__ import annotations

from dataclasses import dataclass

from workers.base import PoolOptions

__all__ = ["INLINE_BELOW_S", "PROBE_ITEMS", "PROBE_BATCHES", "CostProbe", "may_inline"]

INLINE_BELOW_S = 0.001
"""Work per item under which a tier counts as cheap (1 ms)."""
PROBE_ITEMS = 32
PROBE_BATCHES = 3
"""A pool is judged after at least this many items and batches ran on Ray."""


def may_inline(options: PoolOptions) -> bool:
    """Whether a pool with these options may be moved into the driver at all."""
    return bool(getattr(options, "auto_inline", True)) and options.num_gpus == 0 and not options.resources


@dataclass
class CostProbe:
    """What a pool's batches cost on Ray: items, the answers' worker seconds, and wall seconds
    of the round trips (all batches added up, whatever ran in parallel)."""

    items: int = 0
    batches: int = 0
    worker_s: float = 0.0
    wall_s: float = 0.0

    def add(self, items: int, worker_s: float, wall_s: float) -> None:
        self.items += items
        self.batches += 1
        self.worker_s += worker_s
        self.wall_s += wall_s

    def verdict(self) -> str | None:
        """Why the pool should move into the driver (one line with both numbers), or None:
        not measured enough yet, or the work is not cheap, or dispatch is not the larger cost."""
        if self.items < PROBE_ITEMS or self.batches < PROBE_BATCHES:
            return None
        work = self.worker_s / self.items
        dispatch = max(0.0, self.wall_s - self.worker_s) / self.items
        if work >= INLINE_BELOW_S or dispatch <= work:
            return None
        return (f"{work * 1e3:.3f} ms of work per item against {dispatch * 1e3:.3f} ms to send it to an actor "
                f"(measured on {self.items} items in {self.batches} batches)")
