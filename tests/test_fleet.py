"""The run loop on the local executor: ladders, particles, select rules, budgets, events,
journal, bad input."""

from __future__ import annotations

import asyncio

import pytest
from helpers import AlwaysWrongWorker, ExactLargeModel, SlowWorker, WrongThenRightWorker, classic_registry, sudoku_items

from orchestrator import (
    Budget,
    ConfigError,
    Event,
    Fleet,
    Plan,
    PlanError,
    Policy,
    Step,
    Strategy,
    Task,
)
from orchestrator.journal import Journal
from workers import PoolOptions, Tier
from workers.builtin import default_registry, sudoku_skill
from workers.kits import sudoku


def fleet_with(*tiers: Tier, planner=None, fallback: bool = True, **kw) -> Fleet:  # type: ignore[no-untyped-def]
    reg = default_registry()
    skill = sudoku_skill()
    skill.ladder = list(tiers)
    if not fallback:
        skill.fallback = None
    reg.register(skill)
    return Fleet(planner=planner, registry=reg, executor="local", **kw)


async def test_easy_puzzles_settle_at_propagation_and_hard_ones_escalate() -> None:
    items = sudoku_items(9, 6, seed=1, givens=40) + sudoku_items(9, 6, seed=2, givens=22)
    async with Fleet(executor="local", registry=classic_registry()) as fleet:
        report = await fleet.run(Task(inputs={"items": items}))
    assert report.status == "succeeded"
    t = report.totals
    assert t.verified == 12 and t.failed == 0
    assert t.per_tier["propagate"] >= 6
    assert t.per_tier.get("propagate", 0) + t.per_tier.get("exact", 0) == 12
    assert t.escalated == t.per_tier.get("exact", 0)
    for step, item in zip(report.steps, items, strict=True):
        assert sudoku.check_solution(item["puzzle"], step.output["solution"]) is None
        if step.escalated:
            assert step.tiers_tried == ["propagate", "exact"]
            assert step.trials[0].verdict is not None and not step.trials[0].verdict.ok
    assert t.worker_seconds == pytest.approx(sum(s.cost.worker_s for s in report.steps), abs=1e-5)
    assert t.particles == sum(len(s.trials) for s in report.steps)
    assert t.verifier_seconds == pytest.approx(sum(s.cost.verifier_s for s in report.steps), abs=1e-5)
    assert all(s.cost.verifier_s > 0 for s in report.steps)  # each step's answers were ruled on, and timed


async def test_every_second_is_counted_and_priced_and_waiting_is_not_driver_time() -> None:
    from orchestrator import PriceTable

    SlowWorker.delay = 0.5
    # one dollar per CPU second makes the dollars read as seconds
    fleet = fleet_with(Tier("slow", SlowWorker, "tiny", PoolOptions(max_batch=1)), prices=PriceTable(cpu_core_hour_usd=3600.0))
    report = await fleet.run(Task(inputs={"items": sudoku_items(4, 2, seed=13)}))
    await fleet.close()
    t = report.totals
    assert report.status == "succeeded" and t.per_tier == {"slow": 2}
    assert t.worker_seconds >= 2 * 0.5  # the worker's sleeps are its seconds ...
    assert 0 < t.driver_seconds < 0.5  # ... and the driver waited through them without counting them
    assert t.verifier_seconds > 0
    assert t.cpu_seconds == pytest.approx(t.worker_seconds + t.verifier_seconds + t.driver_seconds, abs=1e-5)
    assert t.cpu_cost_usd == pytest.approx(t.cpu_seconds, rel=1e-4)
    assert t.total_cost_usd == pytest.approx(t.cost_usd + t.cpu_cost_usd)
    assert t.cost_per_step_usd == pytest.approx(t.total_cost_usd / 2, rel=1e-4)


async def test_particles_let_a_later_particle_verify_without_escalating() -> None:
    fleet = fleet_with(Tier("flaky", WrongThenRightWorker, "tiny", PoolOptions()))
    task = Task(inputs=sudoku_items(4, 1, seed=3)[0], skill="sudoku.solve")
    plan = Plan(steps=[Step(id="s", skill="sudoku.solve", inputs=task.inputs, strategy=Strategy(particles=3))], output="s")
    report = await fleet.run(task, plan=plan)
    step = report.steps[0]
    assert step.status == "verified" and step.tier == "flaky" and not step.escalated
    assert [t.verdict.ok for t in step.trials] == [False, True, True]  # type: ignore[union-attr]
    # one particle alone fails and climbs to the exact fallback
    plan1 = Plan(steps=[Step(id="s", skill="sudoku.solve", inputs=task.inputs)], output="s")
    step1 = (await fleet.run(task, plan=plan1)).steps[0]
    assert step1.escalated and step1.tier == "exact"
    await fleet.close()


async def test_vote_without_verifier_picks_the_heaviest_group_and_threshold_escalates() -> None:
    fleet = fleet_with(Tier("flaky", WrongThenRightWorker, "tiny", PoolOptions()))
    inputs = sudoku_items(4, 1, seed=4)[0]
    strat = Strategy(particles=3, select="vote", threshold=0.5)
    report = await fleet.run(Task(skill="sudoku.solve"), plan=Plan(steps=[Step(id="s", skill="sudoku.solve", inputs=inputs, strategy=strat, verify=False)], output="s"))
    step = report.steps[0]
    assert step.status == "accepted"
    assert sudoku.check_solution(inputs["puzzle"], step.output["solution"]) is None  # 2 x 0.9 beats 1 x 0.99
    strict = strat.model_copy(update={"threshold": 0.95, "select": "max_confidence", "particles": 2})
    report = await fleet.run(Task(skill="sudoku.solve"), plan=Plan(steps=[Step(id="s", skill="sudoku.solve", inputs=inputs, strategy=strict, verify=False)], output="s"))
    assert report.steps[0].tier == "flaky"  # 0.99 >= 0.95: accepted at the tiny tier
    low = strat.model_copy(update={"threshold": 0.999})
    report = await fleet.run(Task(skill="sudoku.solve"), plan=Plan(steps=[Step(id="s", skill="sudoku.solve", inputs=inputs, strategy=low, verify=False)], output="s"))
    assert report.steps[0].escalated and report.steps[0].tier == "exact"
    await fleet.close()


async def test_ladder_ends_at_large_model_and_budget_stops_run_as_partial() -> None:
    large = ExactLargeModel(tokens_per_call=100, usd_per_call=0.01)
    fleet = fleet_with(Tier("wrong", AlwaysWrongWorker, "tiny", PoolOptions()), planner=large)
    items = sudoku_items(4, 5, seed=5)
    report = await fleet.run(Task(inputs={"items": items}))
    assert report.status == "succeeded"
    assert report.totals.large_model_calls == 5 and report.totals.per_tier == {"large": 5}
    assert report.totals.tokens_in + report.totals.tokens_out == 500
    assert report.totals.cost_usd == pytest.approx(0.05)

    report = await fleet.run(Task(inputs={"items": items}, budget=Budget(max_large_calls=2)))
    assert report.status == "partial" and report.stopped_by == "max_large_calls"
    assert report.totals.large_model_calls == 2
    assert report.totals.verified == 2
    assert all("max_large_calls" in (s.error or "") for s in report.steps if not s.settled)
    report = await fleet.run(Task(inputs={"items": items}, budget=Budget(max_tokens=250)))
    assert report.status == "partial" and report.stopped_by == "max_tokens"
    await fleet.close()


async def test_deadline_stops_the_run_cleanly() -> None:
    SlowWorker.delay = 0.5
    fleet = fleet_with(Tier("slow", SlowWorker, "tiny", PoolOptions(max_batch=1)))
    report = await fleet.run(Task(inputs={"items": sudoku_items(4, 6, seed=6)}, budget=Budget(deadline_s=0.8)))
    assert report.status == "partial" and report.stopped_by == "deadline_s"
    assert 1 <= report.totals.verified < 6
    assert report.totals.skipped == 6 - report.totals.verified
    await fleet.close()


async def test_worker_errors_are_retried_then_escalated() -> None:
    class Boom(SlowWorker):
        name = "test.boom"

        def solve_batch(self, jobs):  # type: ignore[no-untyped-def]
            raise RuntimeError("model exploded")

    fleet = fleet_with(Tier("boom", Boom, "tiny", PoolOptions()))
    report = await fleet.run(Task(inputs=sudoku_items(4, 1, seed=7)[0], skill="sudoku.solve"))
    step = report.steps[0]
    assert step.status == "verified" and step.tier == "exact"
    assert "model exploded" in (step.trials[0].attempt.error or "")
    assert "WorkerError" in (step.trials[0].attempt.error or "")
    await fleet.close()


async def test_a_step_that_no_tier_solves_fails_with_the_reason_and_dependents_are_skipped() -> None:
    fleet = fleet_with(Tier("wrong", AlwaysWrongWorker, "tiny", PoolOptions()), fallback=False)
    inputs = sudoku_items(4, 1, seed=8)[0]
    plan = Plan(
        steps=[
            Step(id="a", skill="sudoku.solve", inputs=inputs),
            Step(id="b", skill="sudoku.solve", inputs=inputs, after=["a"]),
        ],
        output=["a", "b"],
    )
    report = await fleet.run(Task(goal="x"), plan=plan)
    assert report.status == "failed"
    a, b = report.steps
    assert a.status == "failed" and "EscalationFailed" in (a.error or "") and "verifier rejected" in (a.error or "")
    assert b.status == "skipped" and "depends on step 'a'" in (b.error or "")
    await fleet.close()


async def test_events_tell_the_whole_story() -> None:
    events: list[Event] = []
    items = sudoku_items(9, 2, seed=9, givens=40) + sudoku_items(9, 2, seed=10, givens=22)
    async with Fleet(executor="local", registry=classic_registry()) as fleet:
        async for ev in fleet.stream(Task(inputs={"items": items})):
            events.append(ev)
    kinds = [e.kind for e in events]
    assert kinds[0] == "plan_ready" and kinds[-1] == "run_done"
    assert kinds.count("step_done") == 4
    esc = [e for e in events if e.kind == "escalation"]
    assert all(e.data["from_tier"] == "propagate" and e.tier == "exact" for e in esc)
    assert len(esc) == events[-1].data["totals"]["escalated"]
    assert kinds.count("verdict") == kinds.count("attempt")  # every attempt is ruled on, gave-up ones too


async def test_bad_input_raises_typed_errors_before_running() -> None:
    async with Fleet(executor="local") as fleet:
        with pytest.raises(PlanError, match="step 'main'.*repeats 4"):
            await fleet.run(Task(skill="sudoku.solve", inputs={"puzzle": [[4, 4, 0, 0], [0] * 4, [0] * 4, [0] * 4]}))
        with pytest.raises(PlanError, match="unknown skill"):
            await fleet.run(Task(skill="sudoku.solvee", inputs={}))


async def test_journal_records_every_settled_step_and_resume_reruns_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "run.sqlite"
    items = sudoku_items(6, 5, seed=11)
    async with Fleet(executor="local") as fleet:
        first = await fleet.run(Task(inputs={"items": items}), journal=path)
        j = Journal(path)
        assert set(j.settled()) == {f"item{k}" for k in range(5)}
        j.close()
        again = await fleet.run(resume=path)
    assert again.status == "succeeded"
    assert again.totals.resumed == 5 and again.totals.particles == 0
    assert again.output == first.output
    j = Journal(path)
    assert sorted(r.step_id for r in j.entries()) == [f"item{k}" for k in range(5)]  # nothing re-run, nothing appended twice
    j.close()


def test_run_sync_refuses_inside_a_running_loop() -> None:
    async def inner() -> None:
        with pytest.raises(Exception, match="await fleet.run"):
            Fleet(executor="local").run_sync(Task(skill="sudoku.solve", inputs=sudoku_items(4, 1, 0)[0]))

    asyncio.run(inner())


def test_run_sync_from_plain_code() -> None:
    fleet = Fleet(executor="local")
    report = fleet.run_sync(Task(skill="sudoku.solve", inputs=sudoku_items(4, 1, 0)[0]))
    assert report.status == "succeeded"
    fleet.close_sync()


async def test_inputs_resolved_from_references_are_validated() -> None:
    async with Fleet(executor="local") as fleet:
        plan = Plan(
            steps=[
                Step(id="a", skill="sudoku.solve", inputs=sudoku_items(4, 1, 12)[0]),
                Step(id="b", skill="route.assemble", inputs={"legs": [{"$ref": "a.solution"}]}),
            ],
            output="b",
        )
        report = await fleet.run(Task(goal="x"), plan=plan)
    b = report.steps[1]
    assert b.status == "failed" and "InputError" in (b.error or "")
    assert report.steps[0].status == "verified"  # a finished step's result is kept


def test_policy_modes_pick_tiers() -> None:
    from orchestrator.escalation import ladder_for

    skill = classic_registry().get("sudoku.solve")
    step = Step(id="s", skill="sudoku.solve")
    assert [t.name for t in ladder_for(step, skill, Policy(), False)] == ["propagate", "exact"]
    assert [t.name for t in ladder_for(step, skill, Policy(), True)] == ["propagate", "large"]
    assert [t.name for t in ladder_for(step, skill, Policy(mode="final_only"), True)] == ["large"]
    assert [t.name for t in ladder_for(step, skill, Policy(mode="tiny_only"), True)] == ["propagate"]
    assert [t.name for t in ladder_for(step, skill, Policy(final="fallback"), True)] == ["propagate", "exact"]
    with pytest.raises(ConfigError, match="unknown tier"):
        ladder_for(step, skill, Policy(ladders={"sudoku.solve": ["nope"]}), False)


async def test_failed_steps_trigger_one_replan_that_keeps_settled_steps() -> None:
    from orchestrator import EscalationFailed
    from planners.base import Planned

    class Replanner(ExactLargeModel):
        replans = 0

        async def solve(self, step, inputs, skill):  # type: ignore[no-untyped-def]
            if step.id == "bad":
                raise EscalationFailed("the large model refuses step 'bad'")
            return await super().solve(step, inputs, skill)

        async def replan(self, task, plan, failures, skills):  # type: ignore[no-untyped-def]
            self.replans += 1
            assert [f.step_id for f in failures] == ["bad"]
            steps = [s if s.id != "bad" else s.model_copy(update={"id": "fixed"}) for s in plan.steps]
            return Planned(Plan(steps=steps, output=["good", "fixed"]))

    planner = Replanner()
    fleet = fleet_with(Tier("wrong", AlwaysWrongWorker, "tiny", PoolOptions()), planner=planner)
    a, b = sudoku_items(4, 2, seed=50)
    plan = Plan(steps=[Step(id="good", skill="sudoku.solve", inputs=a), Step(id="bad", skill="sudoku.solve", inputs=b)], output=["good", "bad"])
    events: list[Event] = []
    report = await fleet.run(Task(goal="x"), plan=plan, on_event=events.append)
    assert planner.replans == 1
    assert report.status == "succeeded"
    assert [s.step_id for s in report.steps] == ["good", "fixed"]
    dispatched = [e.step_id for e in events if e.kind == "step_dispatched"]
    assert dispatched.count("good") == 2  # wrong tier, then large: once, never re-run after the replan
    assert report.totals.large_model_calls == 2  # good + fixed; the refused call raised before costing
    await fleet.close()


async def test_a_tier_whose_pool_cannot_start_is_climbed_past() -> None:
    from orchestrator import ConfigError as _ConfigError

    class BadCheckpoint(SlowWorker):
        name = "test.bad-checkpoint"

        def setup(self, device: str = "cpu") -> None:
            raise _ConfigError("checkpoint broken.safetensors is corrupt; retrain it")

    fleet = fleet_with(Tier("neural", BadCheckpoint, "tiny", PoolOptions()))
    report = await fleet.run(Task(inputs={"items": sudoku_items(4, 3, seed=60)}))
    assert report.status == "succeeded"
    for step in report.steps:
        assert step.tiers_tried[0] == "neural" and step.escalated
        assert "corrupt" in (step.trials[0].attempt.error or "")
    await fleet.close()
