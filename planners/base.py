"""The Planner protocol: turn a task into a typed plan, replan after failures, and (as the
large model) answer steps that every lower tier failed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from pydantic import BaseModel

from tinyfleet_core.models import Attempt, Cost, Plan, Step, StepResult, Task
from workers.base import Skill
from workers.registry import SkillRegistry

__all__ = ["Planner", "Planned"]


@dataclass(frozen=True)
class Planned:
    """A plan and what making it cost (LLM tokens; zero for the rule planner)."""

    plan: Plan
    cost: Cost = field(default_factory=Cost)


@runtime_checkable
class Planner(Protocol):
    name: str
    has_large_model: bool
    """True when ``solve`` reaches a large model: it then becomes every ladder's last tier."""

    async def plan(self, task: Task, skills: SkillRegistry) -> Planned: ...

    async def replan(
        self, task: Task, plan: Plan, failures: list[StepResult], skills: SkillRegistry
    ) -> Planned: ...

    async def solve(self, step: Step, inputs: BaseModel, skill: Skill) -> Attempt: ...
