"""Plan validation before anything runs, and the rule planner's plans."""

from __future__ import annotations

import pytest
from helpers import sudoku_items
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator import Budget, Plan, PlanError, Step, Task, validate_plan
from planners import RulePlanner
from workers.builtin import default_registry
from workers.kits.maze import generate

REG = default_registry()
PUZ = sudoku_items(4, 1, seed=0)[0]


def plan(*steps: Step, output: str | list[str] = "a") -> Plan:
    return Plan(steps=list(steps), output=output)


def test_valid_plan_returns_validated_literal_inputs() -> None:
    p = plan(Step(id="a", skill="sudoku.solve", inputs=PUZ))
    assert set(validate_plan(p, REG)) == {"a"}


@pytest.mark.parametrize(
    "p, match, step",
    [
        (plan(Step(id="a", skill="chess.move", inputs={})), "unknown skill 'chess.move'", "a"),
        (plan(Step(id="a", skill="sudoku.solve", inputs={"puzzle": [[1]]})), "step 'a'.*n in", "a"),
        (plan(Step(id="a", skill="sudoku.solve", inputs={"grid": 1})), "step 'a'.*field", "a"),
        (
            plan(Step(id="a", skill="route.assemble", inputs={"legs": [{"$ref": "ghost.path"}]})),
            "references missing step 'ghost'",
            "a",
        ),
        (
            plan(
                Step(id="a", skill="route.assemble", inputs={"legs": [{"$ref": "b.path"}]}),
                Step(id="b", skill="route.assemble", inputs={"legs": [{"$ref": "a.path"}]}),
            ),
            "cycle: a -> b -> a",
            "a",
        ),
        (plan(Step(id="a", skill="sudoku.solve", inputs=PUZ, after=["zz"])), "after missing step 'zz'", "a"),
        (
            plan(Step(id="a", skill="sudoku.solve", inputs=PUZ), Step(id="a", skill="sudoku.solve", inputs=PUZ)),
            "used twice",
            "a",
        ),
        (plan(Step(id="a", skill="sudoku.solve", inputs={"puzzle": [[2, 0, 0, 2], [0] * 4, [0] * 4, [0] * 4]})), "repeats 2", "a"),
        (plan(Step(id="a", skill="maze.route", inputs={"grid": ["S.G", "..G"]})), "exactly one 'S' and one 'G'", "a"),
    ],
)
def test_invalid_plans_name_the_step_and_problem(p: Plan, match: str, step: str) -> None:
    with pytest.raises(PlanError, match=match) as e:
        validate_plan(p, REG)
    assert e.value.step == step


def test_consistent_inputs_without_an_answer_pass_validation() -> None:
    """Validation is local: an unsolvable but consistent sudoku, or a goal walled off from
    the start, is well-formed input; the ladder's exact tier finds out at run time."""
    unsolvable = {"puzzle": [[1, 2, 3, 0], [0, 0, 0, 4], [0] * 4, [0] * 4]}  # (0,3) has no candidate
    p = plan(Step(id="a", skill="sudoku.solve", inputs=unsolvable), Step(id="b", skill="maze.route", inputs={"grid": ["S#G"]}))
    assert set(validate_plan(p, REG)) == {"a", "b"}


def test_plan_over_budget_is_rejected() -> None:
    p = plan(*[Step(id=f"s{k}", skill="sudoku.solve", inputs=PUZ) for k in range(3)])
    with pytest.raises(PlanError, match="max_steps=2"):
        validate_plan(p, REG, Budget(max_steps=2))


def test_bad_step_id_and_empty_task_are_rejected() -> None:
    with pytest.raises(ValueError, match="step id"):
        Step(id="1 bad", skill="sudoku.solve")
    with pytest.raises(ValueError, match="goal"):
        Task()


async def test_rule_planner_batches_and_recognises_mixed_items() -> None:
    items = [*sudoku_items(4, 2, seed=1), {"grid": generate(7, __import__("random").Random(0))}]
    planned = await RulePlanner().plan(Task(inputs={"items": items}), REG)
    assert [s.skill for s in planned.plan.steps] == ["sudoku.solve", "sudoku.solve", "maze.route"]
    assert planned.plan.output == ["item0", "item1", "item2"]


async def test_rule_planner_turns_stops_into_parallel_legs_and_an_assemble_step() -> None:
    grid = ["#######", "#.....#", "#.###.#", "#.....#", "#######"]
    planned = await RulePlanner().plan(Task(inputs={"grid": grid, "stops": [[1, 1], [3, 5], [1, 5]]}), REG)
    p = planned.plan
    assert [s.id for s in p.steps] == ["leg0", "leg1", "route"]
    assert p.step("route").inputs == {"legs": [{"$ref": "leg0.path"}, {"$ref": "leg1.path"}]}
    validate_plan(p, REG)


async def test_rule_planner_says_what_to_do_when_it_cannot_tell_the_skill() -> None:
    with pytest.raises(PlanError, match="set 'skill'"):
        await RulePlanner().plan(Task(goal="write me a poem"), REG)
    with pytest.raises(PlanError, match="stop 1"):
        await RulePlanner().plan(Task(inputs={"grid": ["S.G"], "stops": [[0, 0], "x"]}), REG)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 12), st.floats(allow_nan=True), st.text(max_size=4)),
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.sampled_from(["puzzle", "grid", "stops", "items", "legs", "x"]), inner, max_size=3)),
    max_leaves=25,
)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([None, "sudoku.solve", "maze.route", "route.assemble", "nope.skill"]), st.dictionaries(st.sampled_from(["puzzle", "grid", "stops", "items", "legs"]), json_values, max_size=3))
def test_random_malformed_tasks_only_give_typed_errors(skill: str | None, inputs: dict) -> None:
    import asyncio

    from orchestrator import TinyfleetError

    try:
        task = Task(skill=skill, inputs=inputs, goal="g")
        planned = asyncio.run(RulePlanner().plan(task, REG))
        validate_plan(planned.plan, REG)
    except TinyfleetError:
        pass
