"""Every problem of a plan at once, so one re-ask can fix them all.

:func:`~orchestrator.validate_plan` stops at the first problem, which is right before a run
but costs a model one re-ask per problem. :func:`plan_problems` runs the same validation
again and again: each time it fails on a step, the problem is recorded and that step is set
aside (replaced by a placeholder with the same id, so references to it still count), until
the plan passes. The messages are exactly the ones the run loop would give.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from planners.plan_check import has_refs, validate_plan
from tinyfleet_core.errors import PlanError
from tinyfleet_core.models import Budget, Plan, Step
from tinyfleet_core.refs import step_inputs_with_task_inputs
from tinyfleet_core.validation import problems
from workers.base import Skill
from workers.registry import SkillRegistry

__all__ = ["plan_problems"]

_PLACEHOLDER = "tinyfleet.set_aside"


class _Anything(BaseModel):
    model_config = ConfigDict(extra="allow")


_SET_ASIDE = Skill(name=_PLACEHOLDER, description="", input_model=_Anything, output_model=_Anything)


def _more_input_errors(step: Step, skills: SkillRegistry, task_inputs: Mapping[str, Any] | None) -> list[str]:
    """Every field problem of a step's literal inputs after the first (validate_plan names one)."""
    if step.skill not in skills or has_refs(step):
        return []
    try:
        literal = step_inputs_with_task_inputs(step, task_inputs)
    except PlanError:
        return []
    if literal is None:
        return []
    try:
        skills.get(step.skill).input_model.model_validate(literal)
    except ValidationError as e:
        return [f"field '{loc}': {msg}" for loc, msg in problems(e, 6)[1:]]
    return []


def plan_problems(
    plan: Plan,
    skills: SkillRegistry,
    budget: Budget | None = None,
    task_inputs: Mapping[str, Any] | None = None,
    *,
    limit: int = 30,
) -> list[str]:
    """Every problem ``validate_plan`` would find in ``plan`` (one per step, plus the plan's
    own), in order; empty when the plan is valid. At most ``limit``."""
    registry = SkillRegistry([*skills, _SET_ASIDE])
    problems: list[str] = []
    steps: list[Step] = []
    seen: set[str] = set()
    for s in plan.steps:
        if s.id in seen:
            problems.append(f"step id {s.id!r} is used twice; step ids must be unique")
            continue
        seen.add(s.id)
        steps.append(s)
    if budget is not None and len(steps) > budget.max_steps:
        problems.append(
            f"plan has {len(steps)} steps, over the budget's max_steps={budget.max_steps}; "
            "raise the budget or split the task"
        )
    for _ in range(len(steps) + 1):
        if len(problems) >= limit:
            break
        try:
            validate_plan(Plan(steps=steps, output=plan.output), registry, None, task_inputs)
            break
        except PlanError as e:
            problem = str(e)
            if e.step is None or e.step not in seen:
                problems.append(problem)
                break
            bad = next(s for s in steps if s.id == e.step)
            more = _more_input_errors(bad, skills, task_inputs) if " input: field " in problem else []
            problems.append(problem + "".join(f"; also {m}" for m in more))
            steps = [Step(id=s.id, skill=_PLACEHOLDER) if s.id == e.step else s for s in steps]
    return problems[:limit]
