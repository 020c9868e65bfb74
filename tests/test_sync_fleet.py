"""The synchronous SDK: ``with Fleet(...) as fleet:`` closes the pools on exit; ``run_sync`` and
``run_plan_sync`` beside the async ``run`` / ``run_plan`` (which keep working); inside a running
event loop the sync calls refuse with a ConfigError that says to await instead."""

from __future__ import annotations

import pytest
from helpers import sudoku_items

from orchestrator import Fleet, LocalExecutor, Plan, Step, Task
from orchestrator.ray_executor import RayExecutor
from tinyfleet_core.errors import ConfigError
from workers.kits import sudoku


def _plan(items: list[dict[str, object]]) -> Plan:
    return Plan(steps=[Step(id=f"s{k}", skill="sudoku.solve", inputs=i) for k, i in enumerate(items)], output=[f"s{k}" for k in range(len(items))])


def test_with_block_runs_sync_and_closes_the_pools_on_exit() -> None:
    ex = LocalExecutor()
    item = sudoku_items(4, 1, seed=3)[0]
    with Fleet(executor=ex) as fleet:
        report = fleet.run_sync(Task(skill="sudoku.solve", inputs=item))
        assert report.status == "succeeded"
        assert sudoku.check_solution(item["puzzle"], report.output["solution"]) is None
        assert ex.pools(), "the run started pools"
        again = fleet.run_sync(Task(skill="sudoku.solve", inputs=item))  # a second call reuses the fleet's loop
        assert again.status == "succeeded"
    assert ex.pools() == []  # closed on exit


def test_run_plan_sync_runs_a_hand_built_plan() -> None:
    items = sudoku_items(4, 3, seed=11)
    with Fleet(executor="local") as fleet:
        report = fleet.run_plan_sync(_plan(items))
        ex = fleet.executor
    assert report.status == "succeeded" and report.totals.verified == 3
    for item, out in zip(items, report.output, strict=True):
        assert sudoku.check_solution(item["puzzle"], out["solution"]) is None
    assert ex.pools() == []


def test_with_block_closes_pools_when_the_body_raises() -> None:
    ex = LocalExecutor()
    with pytest.raises(RuntimeError, match="boom"), Fleet(executor=ex) as fleet:
        fleet.run_sync(Task(skill="sudoku.solve", inputs=sudoku_items(4, 1, seed=5)[0]))
        raise RuntimeError("boom")
    assert ex.pools() == []


def test_sync_fleet_on_ray(ray_session: None) -> None:
    ex = RayExecutor()
    items = sudoku_items(6, 4, seed=9)
    with Fleet(executor=ex) as fleet:
        report = fleet.run_plan_sync(_plan(items))
        assert ex.pools()
    assert report.status == "succeeded" and report.executor == "ray" and report.totals.verified == 4
    assert ex.pools() == []


async def test_sync_calls_inside_an_event_loop_say_to_await_and_async_api_still_works() -> None:
    items = sudoku_items(4, 2, seed=13)
    fleet = Fleet(executor="local")
    with pytest.raises(ConfigError, match=r"run_plan_sync\(\) was called inside a running event loop; use 'await fleet.run_plan"):
        fleet.run_plan_sync(_plan(items))
    with pytest.raises(ConfigError, match=r"use 'await fleet.run\(\.\.\.\)'"):
        fleet.run_sync(Task(skill="sudoku.solve", inputs=items[0]))
    async with fleet:
        report = await fleet.run_plan(_plan(items))
        assert report.status == "succeeded"
