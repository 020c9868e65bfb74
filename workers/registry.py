"""The skill registry: skill name -> Skill, with lookups that fail with clear errors."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel, ValidationError

from tinyfleet_core.errors import ConfigError, InputError, PlanError
from tinyfleet_core.validation import first_problem
from workers.base import Skill

__all__ = ["SkillRegistry", "validate_payload"]


def validate_payload(model: type[BaseModel], payload: Any, *, what: str) -> BaseModel:
    """Validate ``payload`` against ``model``; raise InputError naming the field and problem."""
    if isinstance(payload, model):
        return payload
    try:
        return model.model_validate(payload)
    except InputError:
        raise
    except ValidationError as e:
        loc, msg = first_problem(e)
        raise InputError(f"{what}: field '{loc}': {msg}") from None


class SkillRegistry:
    """Skills by name. ``register`` adds or replaces; ``get`` raises PlanError for unknown names."""

    def __init__(self, skills: list[Skill] | None = None) -> None:
        self._skills: dict[str, Skill] = {}
        for s in skills or []:
            self.register(s)

    def register(self, skill: Skill) -> Skill:
        if not skill.name or "." not in skill.name:
            raise ConfigError(f"skill name {skill.name!r} must look like 'area.verb' (e.g. 'sudoku.solve')")
        # A skill with no ladder and no fallback is legal: only a large model (an LLM
        # planner's solve) can answer it, and running it offline fails with a clear error.
        self._skills[skill.name] = skill
        return skill

    def get(self, name: str) -> Skill:
        try:
            return self._skills[name]
        except KeyError:
            known = ", ".join(sorted(self._skills)) or "(none)"
            raise PlanError(f"unknown skill {name!r}; known skills: {known}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._skills

    def __iter__(self) -> Iterator[Skill]:
        return iter(self._skills.values())

    def names(self) -> list[str]:
        return sorted(self._skills)

    def recognize(self, inputs: dict[str, Any]) -> str | None:
        """The first skill whose ``recognize`` accepts these inputs, or None."""
        for s in self._skills.values():
            if s.recognize is not None and s.recognize(inputs):
                return s.name
        return None

    def load_entry_points(self, group: str = "tinyfleet.skills") -> list[str]:
        """Register skills that installed packages declare under ``group``. Each entry point
        names a callable returning a Skill or a list of Skills."""
        added = []
        for ep in entry_points(group=group):
            try:
                made = ep.load()()
            except Exception as e:  # a broken plug-in must not hide behind a vague error
                raise ConfigError(f"skill entry point {ep.name!r} ({ep.value}) failed to load: {e}") from e
            for s in made if isinstance(made, list) else [made]:
                if not isinstance(s, Skill):
                    raise ConfigError(f"skill entry point {ep.name!r} returned {type(s).__name__}, not a Skill")
                self.register(s)
                added.append(s.name)
        return added

    def describe(self) -> list[dict[str, Any]]:
        """Names, descriptions, tiers and input schemas: what ``tinyfleet skills`` and LLM
        planners see."""
        out = []
        for s in sorted(self._skills.values(), key=lambda s: s.name):
            out.append(
                {
                    "skill": s.name,
                    "description": s.description,
                    "tiers": [{"name": t.name, "kind": t.kind, "worker": t.worker().name} for t in s.ladder],
                    "fallback": (
                        {"name": s.fallback.name, "kind": s.fallback.kind, "worker": s.fallback.worker().name}
                        if s.fallback
                        else None
                    ),
                    "verifier": s.verifier.name if s.verifier else None,
                    "input_schema": s.input_model.model_json_schema(),
                    "output_schema": s.output_model.model_json_schema(),
                }
            )
        return out
