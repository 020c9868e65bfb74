"""Validation is cheap and local: no exact solver runs in the driver before dispatch. A
consistent input with no answer is found at run time by the ladder's exact tier, which
fails the step with a reason that names it."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from helpers import classic_registry

from orchestrator import Event, Fleet, Plan, Step, Task, validate_plan
from workers.builtin import default_registry
from workers.kits import maze, sudoku


@dataclass
class Calls:
    """Calls of the kits' exact solvers, and the thread each came from."""

    threads: list[int] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.threads)

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kw: Any) -> Any:
            self.threads.append(threading.get_ident())
            return fn(*args, **kw)

        return counted


@pytest.fixture
def exact_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Calls]:
    """Counts every call of the exact solvers: sudoku's search (behind solve_exact and
    count_solutions), solve_exact itself, and the maze's BFS."""
    calls = Calls()
    monkeypatch.setattr(sudoku, "_search", calls.wrap(sudoku._search))
    monkeypatch.setattr(sudoku, "solve_exact", calls.wrap(sudoku.solve_exact))
    monkeypatch.setattr(maze, "bfs_path", calls.wrap(maze.bfs_path))
    yield calls


def thousand_9x9() -> list[dict[str, Any]]:
    """1000 distinct 9x9 puzzles, each with a unique solution: 25 generated, 40 relabelled
    and permuted copies of each (generating 1000 from scratch takes about 20 s)."""
    rng = random.Random("tests:no-exact:9x9")
    out: list[dict[str, Any]] = []
    for _ in range(25):
        puzzle, _ = sudoku.generate(9, rng)
        out += [{"puzzle": sudoku.random_transform(9, rng).apply(puzzle)} for _ in range(40)]
    return out


def test_validating_1000_9x9_puzzles_runs_no_exact_solver(exact_calls: Calls) -> None:
    items = thousand_9x9()
    exact_calls.threads.clear()  # generating puzzles searches (uniqueness); count from here
    plan = Plan(steps=[Step(id=f"p{k}", skill="sudoku.solve", inputs=i) for k, i in enumerate(items)], output=[f"p{k}" for k in range(1000)])
    validated = validate_plan(plan, default_registry())
    assert len(validated) == 1000
    assert exact_calls.count == 0


async def test_a_1000_puzzle_9x9_run_solves_nothing_in_the_driver(exact_calls: Calls) -> None:
    items = thousand_9x9()
    exact_calls.threads.clear()
    driver = threading.get_ident()
    at: dict[str, int] = {}

    def hook(ev: Event) -> None:
        if ev.kind in ("plan_ready", "step_dispatched") and ev.kind not in at:
            at[ev.kind] = exact_calls.count

    async with Fleet(executor="local", registry=classic_registry()) as fleet:
        report = await fleet.run(Task(skill="sudoku.solve", inputs={"items": items}), on_event=hook)
    assert at == {"plan_ready": 0, "step_dispatched": 0}  # planned, validated, dispatched: no exact solve
    assert report.status == "succeeded" and report.totals.verified == 1000
    exact = report.totals.per_tier.get("exact", 0)
    assert exact > 0  # the run is real: the hard ones climbed to the exact tier ...
    assert exact_calls.count >= exact
    assert driver not in exact_calls.threads  # ... which ran in its pool's thread, never in the driver


UNSOLVABLE_4X4 = [[1, 2, 3, 0], [0, 0, 0, 4], [0] * 4, [0] * 4]  # no repeated given; (0,3) has no candidate


async def test_an_unsolvable_consistent_sudoku_fails_at_the_exact_tier_naming_the_step() -> None:
    async with Fleet(executor="local") as fleet:
        report = await fleet.run(Task(skill="sudoku.solve", inputs={"puzzle": UNSOLVABLE_4X4}))
    assert report.status == "failed"
    (step,) = report.steps
    assert step.status == "failed" and step.tiers_tried[-1] == "exact"
    assert "step 'main'" in (step.error or "") and "the exact tier 'exact' found no answer" in (step.error or "")
    assert "no solution" in (step.error or "")
    assert report.error is not None and "main" in report.error and "no solution" in report.error


async def test_an_unreachable_goal_fails_at_the_bfs_tier_naming_the_step() -> None:
    grid = ["S.#..", "..#..", "###..", "....G"]  # G is walled off from S
    async with Fleet(executor="local") as fleet:
        report = await fleet.run(Task(skill="maze.route", inputs={"grid": grid}))
    assert report.status == "failed"
    (step,) = report.steps
    assert step.tiers_tried[-1] == "bfs"
    assert "step 'main'" in (step.error or "") and "the exact tier 'bfs' found no answer" in (step.error or "")
    assert "no path from S to G" in (step.error or "")
