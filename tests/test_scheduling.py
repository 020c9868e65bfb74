"""The DAG is scheduled step by step, not level by level: a step starts as soon as its own
dependencies are done, while an unrelated branch is still running.

Plan: ``slow`` (no dependencies) || ``first`` -> ``second``. ``slow``'s worker holds its
answer until ``second``'s worker has run (a gate the second step opens). A scheduler that
waits for a whole level (``slow`` and ``first``) before starting ``second`` never opens the
gate while ``slow`` waits, so ``slow`` gives up and the run fails; the test then fails on the
status and the event order, not on a timing.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from pydantic import BaseModel

from orchestrator import Event, Fleet, Plan, Step, Task
from orchestrator.journal import Journal
from orchestrator.scheduler import StepScheduler
from tinyfleet_core.models import Attempt
from workers.base import Job, PoolOptions, Skill, Tier, Worker
from workers.registry import SkillRegistry

GATE = threading.Event()
GATE_WAIT_S = 60.0  # a safety bound only: with a correct scheduler the gate opens at once


class Note(BaseModel):
    text: str


class Opened(BaseModel):
    gate_open: bool


class GatedWorker(Worker):
    """Answers only once the gate is open (or gives up after GATE_WAIT_S)."""

    name = "test.gated"
    skill = "test.gated"

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        opened = GATE.wait(GATE_WAIT_S)
        return [self.attempt(Opened(gate_open=True), 1.0, job=j) if opened else self.attempt(None, 0.0, job=j, error="gate never opened") for j in jobs]


class OpenerWorker(Worker):
    """Echoes its note; a note saying "open" opens the gate."""

    name = "test.opener"
    skill = "test.opener"

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        out = []
        for j in jobs:
            assert isinstance(j.input, Note)
            if j.input.text == "open":
                GATE.set()
            out.append(self.attempt(Note(text=j.input.text), 1.0, job=j))
        return out


def _registry() -> SkillRegistry:
    pool = PoolOptions(max_batch=1)
    return SkillRegistry([
        Skill("test.gated", "waits for the gate", Note, Opened, ladder=[Tier("gated", GatedWorker, "heuristic", pool)]),
        Skill("test.opener", "opens the gate", Note, Note, ladder=[Tier("opener", OpenerWorker, "heuristic", pool)]),
    ])


PLAN = Plan(
    steps=[
        Step(id="slow", skill="test.gated", inputs={"text": "wait"}),
        Step(id="first", skill="test.opener", inputs={"text": "hello"}),
        Step(id="second", skill="test.opener", inputs={"text": "open"}, after=["first"]),
    ],
    output=["slow", "second"],
)


async def test_a_step_starts_while_an_unrelated_branch_still_runs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    GATE.clear()
    events: list[Event] = []
    path = tmp_path / "run.sqlite"
    async with Fleet(registry=_registry(), executor="local", hooks=[events.append]) as fleet:
        report = await fleet.run(Task(goal="gates"), plan=PLAN, journal=path)
        assert report.status == "succeeded", report.error
        assert report.output == [{"gate_open": True}, {"text": "open"}]
        seen = [(e.kind, e.step_id) for e in events if e.kind in ("step_dispatched", "step_done")]
        # `second` was dispatched before `slow` finished: no level barrier (slow's answer
        # waited on second's worker, so this order is forced, not a race)
        assert seen.index(("step_dispatched", "second")) < seen.index(("step_done", "slow"))
        # resuming the finished run re-runs nothing
        GATE.clear()
        again = await fleet.run(resume=path)
    assert again.status == "succeeded" and again.totals.resumed == 3 and again.totals.particles == 0
    assert again.output == report.output
    j = Journal(path)
    assert sorted(r.step_id for r in j.entries()) == ["first", "second", "slow"]
    j.close()


def test_the_scheduler_releases_each_step_when_its_own_dependencies_are_done() -> None:
    plan = Plan(
        steps=[
            Step(id="a", skill="x", inputs={}),
            Step(id="b", skill="x", inputs={}),
            Step(id="c", skill="x", inputs={"v": {"$ref": "b.v"}}),
            Step(id="d", skill="x", inputs={}, after=["a", "c"]),
        ],
        output="d",
    )
    s = StepScheduler(plan)
    assert s.ready() == ["a", "b"]
    s.done("b")
    assert s.ready() == ["c"]  # while a still runs
    s.done("c")
    assert s.ready() == [] and s.unreleased() == ["d"]
    s.done("a")
    assert s.ready() == ["d"] and s.unreleased() == []
