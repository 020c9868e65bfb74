"""The offline rule planner: plans tasks whose skill is given or recognisable from inputs.

- one payload -> one step;
- ``{"items": [...]}`` -> one step per item (run in parallel), output is the list;
- ``{"grid": [...], "stops": [[r, c], ...]}`` -> one ``maze.route`` step per leg, all in
  parallel, plus a ``route.assemble`` step that references every leg.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from planners.base import Planned
from tinyfleet_core.errors import EscalationFailed, PlanError
from tinyfleet_core.models import Attempt, Plan, Step, StepResult, Strategy, Task
from workers.base import Skill
from workers.kits.maze import with_endpoints
from workers.registry import SkillRegistry

__all__ = ["RulePlanner"]


class RulePlanner:
    """Deterministic planning with no model. It has no large model: ``solve`` refuses, so
    ladders end at each skill's offline fallback (an exact solver, named as such)."""

    name = "rules"
    has_large_model = False

    def __init__(self, strategy: Strategy | None = None) -> None:
        self.strategy = strategy or Strategy()

    def _skill_for(self, task: Task, payload: dict[str, Any], skills: SkillRegistry, where: str) -> str:
        if task.skill:
            skills.get(task.skill)  # PlanError on unknown skill
            return task.skill
        found = skills.recognize(payload) if isinstance(payload, dict) else None
        if found is None:
            keys = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
            raise PlanError(
                f"the rule planner cannot tell which skill {where} needs (keys: {keys}); "
                "set 'skill' in the task or use --planner openai"
            )
        return found

    async def plan(self, task: Task, skills: SkillRegistry) -> Planned:
        inputs = task.inputs
        if "items" in inputs:
            items = inputs["items"]
            if not isinstance(items, list) or not items:
                raise PlanError("'items' must be a non-empty list of inputs, one per step")
            steps = [
                Step(
                    id=f"item{k}",
                    skill=self._skill_for(task, item, skills, f"item {k}"),
                    inputs=item if isinstance(item, dict) else {"value": item},
                    strategy=self.strategy,
                )
                for k, item in enumerate(items)
            ]
            return Planned(Plan(steps=steps, output=[s.id for s in steps]))
        if "stops" in inputs and (task.skill in (None, "maze.route")):
            return Planned(self._route_plan(inputs))
        skill = self._skill_for(task, inputs, skills, "the task")
        return Planned(Plan(steps=[Step(id="main", skill=skill, inputs=inputs, strategy=self.strategy)], output="main"))

    def _route_plan(self, inputs: dict[str, Any]) -> Plan:
        grid, stops = inputs.get("grid"), inputs.get("stops")
        if not isinstance(grid, list) or not grid or not all(isinstance(r, str) for r in grid):
            raise PlanError("a route task needs 'grid': a list of row strings")
        if not isinstance(stops, list) or len(stops) < 2:
            raise PlanError("a route task needs 'stops': at least two [row, col] cells")
        cells = []
        for k, s in enumerate(stops):
            if not (isinstance(s, list | tuple) and len(s) == 2 and all(isinstance(v, int) for v in s)):
                raise PlanError(f"stop {k} is {s!r}; each stop must be [row, col]")
            cells.append((s[0], s[1]))
        steps = []
        for k in range(len(cells) - 1):
            try:
                leg_grid = with_endpoints(grid, cells[k], cells[k + 1])
            except Exception as e:  # InputError from the maze kit, reworded with the leg
                raise PlanError(f"leg {k} ({cells[k]} -> {cells[k + 1]}): {e}", step=f"leg{k}") from None
            steps.append(Step(id=f"leg{k}", skill="maze.route", inputs={"grid": leg_grid}, strategy=self.strategy))
        legs = [{"$ref": f"leg{k}.path"} for k in range(len(steps))]
        steps.append(Step(id="route", skill="route.assemble", inputs={"legs": legs}))
        return Plan(steps=steps, output="route")

    async def replan(self, task: Task, plan: Plan, failures: list[StepResult], skills: SkillRegistry) -> Planned:
        raise PlanError("the rule planner cannot replan; failed steps stay failed (use --planner openai to replan)")

    async def solve(self, step: Step, inputs: BaseModel, skill: Skill) -> Attempt:
        raise EscalationFailed(
            f"step {step.id!r}: no large model is configured (rule planner); the ladder ends at the offline fallback",
            step=step.id,
        )
