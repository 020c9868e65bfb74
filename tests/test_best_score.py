"""select="best_score": the step's first tier and the skill's fallback answer together and the
verified answer with the better verifier score settles the step, both scores reported; the
same step under first_verified keeps the first tier's answer. Real run loop, local executor."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from pydantic import BaseModel

from orchestrator import Fleet, Plan, Policy, Step, Strategy, Task
from tinyfleet_core.models import Attempt, Verdict
from workers import Job, PoolOptions, Tier, Worker
from workers.base import Skill, Verifier
from workers.builtin import default_registry

SKILL = "toy.estimate"


class Ask(BaseModel):
    target: float
    limit: float = 10.0


class Guess(BaseModel):
    y: float


def _guesser(name: str, value: float, particles: Sequence[float] = ()) -> type[Worker]:
    """A worker answering ``value`` (particle k > 0: ``particles[k - 1]``)."""

    def solve_batch(self: Worker, jobs: Sequence[Job]) -> list[Attempt]:
        out = []
        for j in jobs:
            y = value if j.particle == 0 or not particles else particles[j.particle - 1]
            out.append(self.attempt(Guess(y=y), 0.9, job=j))
        return out

    return type(name, (Worker,), {"name": f"toy.{name}", "skill": SKILL, "stochastic": bool(particles), "solve_batch": solve_batch})


class ErrorVerifier(Verifier):
    """Score = |y - target| (lower is better); verified when under the input's limit."""

    name = "toy.error"
    score_lower_is_better = True

    def check_batch(self, pairs: Sequence[tuple[BaseModel, BaseModel]]) -> list[Verdict]:
        out = []
        for inp, ans in pairs:
            assert isinstance(inp, Ask) and isinstance(ans, Guess)
            err = abs(ans.y - inp.target)
            out.append(self.verdict(err < inp.limit, f"error {err:g}", err))
        return out


class Closeness(ErrorVerifier):
    """Score = -|y - target| (higher is better), the same ruling."""

    name = "toy.closeness"
    score_lower_is_better = False

    def check_batch(self, pairs: Sequence[tuple[BaseModel, BaseModel]]) -> list[Verdict]:
        return [v.model_copy(update={"score": -(v.score or 0.0)}) for v in super().check_batch(pairs)]


POOL = PoolOptions(inline=True)


def _fleet(verifier: Verifier, select: str | None = None, first: float = 4.0, mid: float = 5.0, tool: float = 7.0) -> Fleet:
    reg = default_registry()
    reg.register(Skill(
        name=SKILL, description="guess a number", input_model=Ask, output_model=Guess,
        ladder=[Tier("tiny", _guesser("Tiny", first, (first + 3.0, first + 0.5)), "tiny", POOL),
                Tier("mid", _guesser("Mid", mid), "tiny", POOL)],
        fallback=Tier("tool", _guesser("Tool", tool), "tool", POOL),
        verifier=verifier, select=select,  # type: ignore[arg-type]
    ))
    return Fleet(registry=reg, executor="local")


def _run(fleet: Fleet, inputs: dict[str, float], strategy: Strategy | None = None):  # type: ignore[no-untyped-def]
    task = Task(skill=SKILL, inputs=inputs)
    plan = None if strategy is None else Plan(steps=[Step(id="s", skill=SKILL, inputs=inputs, strategy=strategy)], output="s")
    try:
        report = fleet.run_sync(task, plan=plan) if plan is not None else fleet.run_sync(task)
    finally:
        fleet.close_sync()
    (step,) = report.steps
    return step


@pytest.mark.parametrize("verifier", [ErrorVerifier(), Closeness()], ids=["lower-is-better", "higher-is-better"])
def test_best_score_keeps_the_better_tier_and_first_verified_the_first(verifier: Verifier) -> None:
    # target 6.5: tiny answers 4 (error 2.5), the tool 7 (error 0.5); both verify (limit 10)
    best = _run(_fleet(verifier), {"target": 6.5}, Strategy(select="best_score"))
    assert best.status == "verified" and best.tier == "tool" and best.output == {"y": 7.0}
    assert best.tiers_tried == ["tiny", "tool"] and not best.escalated  # run together, not climbed
    sign = 1 if verifier.score_lower_is_better else -1
    assert best.compared == {"tiny": pytest.approx(sign * 2.5), "tool": pytest.approx(sign * 0.5)}
    assert {t.attempt.tier for t in best.trials} == {"tiny", "tool"}  # both answers are in the report
    first = _run(_fleet(verifier), {"target": 6.5}, Strategy(select="first_verified"))
    assert first.tier == "tiny" and first.output == {"y": 4.0} and first.tiers_tried == ["tiny"] and first.compared == {}


def test_a_tie_or_a_better_first_tier_keeps_the_first_tier() -> None:
    step = _run(_fleet(ErrorVerifier()), {"target": 4.2}, Strategy(select="best_score"))
    assert step.tier == "tiny" and step.compared["tiny"] == pytest.approx(0.2)
    tie = _run(_fleet(ErrorVerifier(), first=5.0, tool=7.0), {"target": 6.0}, Strategy(select="best_score"))
    assert tie.tier == "tiny"  # error 1 each: the cheaper, first tier


def test_best_score_among_particles_of_one_tier() -> None:
    # particles 4, 7 and 4.5; target 7.2: particle 1 is the best-scored, the tool (7.0) too close to call
    step = _run(_fleet(ErrorVerifier(), tool=9.0), {"target": 7.2}, Strategy(select="best_score", particles=3))
    assert step.tier == "tiny" and step.output == {"y": 7.0}
    assert step.compared == {"tiny": pytest.approx(0.2), "tool": pytest.approx(1.8)}


def test_when_only_the_fallback_verifies_it_settles_on_the_same_rung() -> None:
    step = _run(_fleet(ErrorVerifier()), {"target": 7.0, "limit": 1.0}, Strategy(select="best_score"))
    assert step.tier == "tool" and not step.escalated and step.compared == {"tiny": None, "tool": 0.0}
    assert step.trials[0].verdict is not None and not step.trials[0].verdict.ok  # the tiny answer is kept, rejected


def test_when_neither_verifies_the_step_climbs_the_tiers_in_between() -> None:
    from orchestrator.console import escalations_of, totals_lines
    from tinyfleet_core.models import RunReport

    step = _run(_fleet(ErrorVerifier()), {"target": 5.2, "limit": 0.5}, Strategy(select="best_score"))
    assert step.tiers_tried == ["tiny", "tool", "mid"] and step.tier == "mid" and step.escalated
    assert step.compared == {"tiny": None, "tool": None}
    # the run's story: one climb, from the compared rung to mid
    report = RunReport(task_id="t", status="succeeded", steps=[step])
    (climb,) = escalations_of(report)
    assert (climb.from_tier, climb.to_tier) == ("tiny + tool", "mid") and "rejected" in climb.reason
    assert any("escalation events: 1" in line for line in totals_lines(report))
    nothing = _run(_fleet(ErrorVerifier()), {"target": 100.0, "limit": 0.5}, Strategy(select="best_score"))
    assert nothing.status == "failed" and nothing.tiers_tried == ["tiny", "tool", "mid"]  # the tool is not run twice


def test_the_skill_default_applies_unless_the_strategy_names_a_rule() -> None:
    assert _run(_fleet(ErrorVerifier(), select="best_score"), {"target": 6.5}).tier == "tool"  # RulePlanner's Strategy()
    assert _run(_fleet(ErrorVerifier(), select="best_score"), {"target": 6.5}, Strategy()).tier == "tool"
    named = _run(_fleet(ErrorVerifier(), select="best_score"), {"target": 6.5}, Strategy(select="first_verified"))
    assert named.tier == "tiny"
    assert _run(_fleet(ErrorVerifier()), {"target": 6.5}).tier == "tiny"  # no skill default: first_verified


def test_no_companion_when_the_policy_leaves_the_fallback_off_the_ladder() -> None:
    fleet = _fleet(ErrorVerifier())
    fleet.policy = Policy(mode="tiny_only")
    step = _run(fleet, {"target": 6.5}, Strategy(select="best_score"))
    assert step.tier == "tiny" and step.tiers_tried == ["tiny"] and step.compared == {}
