"""Backpressure on Ray (issue 18, item 6): a pool never has more than ``replicas x
max_concurrency`` Ray calls in flight, however many jobs it is handed at once; the rest wait
in the driver's batcher queue as jobs, not as Ray calls. Counted two ways: the executor's own
count of calls sent and not answered (``RayExecutor.pool_load``), and Ray's count of the object
refs the driver holds (one per call not answered), taken while every worker is held at a gate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from pydantic import BaseModel

from orchestrator.executor import PoolSpec
from orchestrator.ray_executor import RayExecutor
from tinyfleet_core.models import Attempt
from workers.base import Job, PoolOptions, Worker


class Gated(BaseModel):
    k: int
    gate: str = ""  # a file: the worker waits until it exists


class GatedWorker(Worker):
    """Answers k; first waits (up to 60 s) until the job's gate file exists."""

    name = "test.gated"
    skill = "test.gated"

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        out = []
        for j in jobs:
            inp = j.input
            assert isinstance(inp, Gated)
            deadline = time.monotonic() + 60
            while inp.gate and not Path(inp.gate).exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            out.append(self.attempt({"k": inp.k}, 1.0, job=j))
        return out


def _ray_refs() -> int:
    """Object refs this driver holds, as Ray counts them (a call not answered holds one)."""
    import ray

    return len(ray._private.worker.global_worker.core_worker.get_all_reference_counts())


async def _pool(replicas: int, max_concurrency: int, max_batch: int) -> tuple[RayExecutor, str]:
    ex = RayExecutor()
    opts = PoolOptions(replicas=replicas, num_cpus=0, max_batch=max_batch, max_wait_ms=0.0,
                       max_concurrency=max_concurrency, auto_inline=False)
    await ex.ensure_pool(PoolSpec(GatedWorker.name, GatedWorker, opts))
    return ex, GatedWorker.name


async def test_a_blocked_pool_holds_the_bound_in_ray_and_queues_the_rest(ray_session: None, tmp_path: Path) -> None:
    ex, pool = await _pool(replicas=2, max_concurrency=2, max_batch=1)  # bound: 2 x 2 = 4 calls
    try:
        gate = tmp_path / "open"
        before = _ray_refs()
        n = 400  # at max_batch 1: 400 Ray calls if nothing held them back
        run = asyncio.ensure_future(ex.submit_many(pool, [Job(Gated(k=k, gate=str(gate))) for k in range(n)]))
        deadline = time.monotonic() + 60
        while ex.pool_load(pool).in_flight < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # room to overshoot, were anything to send more
        load = ex.pool_load(pool)
        held_by_ray = _ray_refs() - before
        assert load.bound == 4
        assert load.in_flight == 4 and load.queued == n - 4, load
        assert 1 <= held_by_ray <= 4, f"Ray counts {held_by_ray} calls out for a bound of 4"
        gate.touch()
        got = await asyncio.wait_for(run, 120)
        assert [a.output["k"] for a in got] == list(range(n))  # type: ignore[union-attr,index]
        load = ex.pool_load(pool)
        assert load.peak_in_flight == 4 and load.in_flight == 0 and load.queued == 0
        assert load.batches == n  # every job answered once, one call per job at max_batch 1
    finally:
        await ex.close()


@pytest.mark.slow
async def test_a_batch_of_100000_items_never_has_more_calls_out_than_the_bound(ray_session: None) -> None:
    ex, pool = await _pool(replicas=2, max_concurrency=2, max_batch=256)
    try:
        n = 100_000
        got = await ex.submit_many(pool, [Job(Gated(k=k)) for k in range(n)])
        assert [a.output["k"] for a in got] == list(range(n))  # type: ignore[union-attr,index]
        load = ex.pool_load(pool)
        assert 1 <= load.peak_in_flight <= load.bound == 4
        assert load.batches >= n // 256  # batches of at most 256, none re-sent twice over
        assert load.in_flight == 0 and load.queued == 0
    finally:
        await ex.close()


async def test_pool_load_names_an_unknown_pool(ray_session: None) -> None:
    from tinyfleet_core.errors import ConfigError

    ex = RayExecutor()
    with pytest.raises(ConfigError, match="no Ray pool named 'nope'"):
        ex.pool_load("nope")
