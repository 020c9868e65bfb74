"""Cheap tiers stay cheap (issue 23): a Ray pool whose measured work per item is under a
millisecond and smaller than dispatching it moves into the driver; costly or pinned pools stay."""

from __future__ import annotations

from dataclasses import replace

import pytest

from orchestrator.cheap_tiers import CostProbe, may_inline
from orchestrator.executor import ExecutorEvent, PoolSpec
from orchestrator.ray_executor import RayExecutor
from tinyfleet.bench.dispatch import FixedCostWorker, NoopInput
from workers import Job
from workers.base import PoolOptions
from workers.kits import sudoku
from workers.kits.classic import SudokuExactSolver
from tests.helpers import sudoku_items


def test_the_probe_moves_only_cheap_work_whose_dispatch_costs_more() -> None:
    cheap = CostProbe()
    for _ in range(3):
        cheap.add(16, worker_s=16 * 0.0001, wall_s=0.02)  # 0.1 ms of work, ~1.2 ms to send per item
    assert cheap.verdict() is not None and "0.100 ms of work per item" in str(cheap.verdict())
    costly = CostProbe()
    for _ in range(3):
        costly.add(16, worker_s=16 * 0.005, wall_s=0.2)  # 5 ms per item: not cheap
    assert costly.verdict() is None
    fast_rpc = CostProbe()
    for _ in range(3):
        fast_rpc.add(16, worker_s=16 * 0.0008, wall_s=16 * 0.0009)  # dispatch 0.1 ms < work 0.8 ms
    assert fast_rpc.verdict() is None
    early = CostProbe()
    early.add(100, worker_s=0.001, wall_s=1.0)  # one batch is not a measurement
    assert early.verdict() is None


def test_pools_placed_on_purpose_or_marked_isolated_never_move() -> None:
    assert may_inline(PoolOptions())
    assert not may_inline(PoolOptions(num_gpus=0.5))
    assert not may_inline(PoolOptions(resources={"gpu_node": 0.01}))
    assert not may_inline(PoolOptions(auto_inline=False))


async def _feed(ex: RayExecutor, pool: str, jobs: list[Job], batches: int) -> list[object]:
    out: list[object] = []
    for _ in range(batches):
        out += await ex.submit_many(pool, jobs)
    return out


async def test_a_cheap_exact_solver_moves_into_the_driver_and_keeps_answering(ray_session: None) -> None:
    events: list[ExecutorEvent] = []
    ex = RayExecutor()
    ex.add_listener(events.append)
    opts = PoolOptions(replicas=1, num_cpus=0, max_batch=16, max_wait_ms=0.0)
    items = sudoku_items(4, 16, seed=5)
    jobs = [Job(sudoku.SudokuInput.model_validate(i)) for i in items]
    try:
        await ex.ensure_pool(PoolSpec("cheap-exact", SudokuExactSolver, opts))
        first = await _feed(ex, "cheap-exact", jobs, 4)
        assert ex.inlined() == ["cheap-exact"]
        (moved,) = [e for e in events if e.kind == "pool_inlined"]
        assert "runs in the driver" in moved.message and "ms to send it to an actor" in moved.message
        later = await ex.submit_many("cheap-exact", jobs)
        assert all(a.info.get("ran_in") == "driver" for a in later)  # type: ignore[union-attr]
        assert not any(a.info.get("ran_in") for a in first[:16])  # type: ignore[union-attr]
        for item, a in zip(items, later, strict=True):
            assert sudoku.check_solution(item["puzzle"], a.output["solution"]) is None  # type: ignore[union-attr,index]
    finally:
        await ex.close()


@pytest.mark.parametrize("why", ["costly", "isolated"])
async def test_costly_or_isolated_pools_stay_on_their_actors(ray_session: None, why: str) -> None:
    ex = RayExecutor()
    opts = PoolOptions(replicas=1, num_cpus=0, max_batch=8, max_wait_ms=0.0)
    cost = 3.0 if why == "costly" else 0.0
    if why == "isolated":
        opts = replace(opts, auto_inline=False)
    try:
        await ex.ensure_pool(PoolSpec(f"stay-{why}", FixedCostWorker, opts))
        jobs = [Job(NoopInput(k=k, cost_ms=cost)) for k in range(8)]
        got = await _feed(ex, f"stay-{why}", jobs, 5)
        assert ex.inlined() == []
        assert [a.output["k"] for a in got] == list(range(8)) * 5  # type: ignore[union-attr,index]
    finally:
        await ex.close()
