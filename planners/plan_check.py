"""Plan validation (before anything runs): what each step depends on, and whether the plan holds.

``$ref`` and ``$input`` are found and resolved by :mod:`tinyfleet_core.refs` (one walker, one
resolver); this module reads the step ids a step depends on from it.

``validate_plan`` raises PlanError naming the step and the problem for: duplicate ids, an
unknown skill, a dangling reference or ``after`` edge, a cycle, a plan over budget, and
literal inputs that do not fit the skill's input model (or fail its precheck).
"""

from __future__ import annotations

import graphlib
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from tinyfleet_core.errors import InputError, PlanError
from tinyfleet_core.models import Budget, Plan, Step
from tinyfleet_core.refs import REF, Reference, step_inputs_with_task_inputs, walk_references
from workers.registry import SkillRegistry, validate_payload

__all__ = ["validate_plan", "references", "dependencies", "has_refs", "split_ref", "topological_order"]


def split_ref(ref: str) -> tuple[str, list[str]]:
    """'leg0.path' -> ('leg0', ['path'])."""
    r = Reference(REF, ref)
    return r.head, r.fields


def references(step: Step) -> list[str]:
    """Step ids this step reads from (through ``$ref``), in order of appearance (the one
    walker, :func:`tinyfleet_core.refs.walk_references`)."""
    try:
        return [r.head for r in walk_references(step.inputs) if r.kind == REF]
    except PlanError as e:
        raise PlanError(f"step {step.id!r}: {e}", step=step.id) from None


def has_refs(step: Step) -> bool:
    return bool(references(step))


def dependencies(step: Step) -> list[str]:
    """Step ids ``step`` waits for: those it reads through ``$ref``, then its ``after`` edges; each once."""
    return list(dict.fromkeys([*references(step), *step.after]))


def topological_order(plan: Plan) -> list[str]:
    """Step ids in an order where every step follows its dependencies (the standard library's
    :class:`graphlib.TopologicalSorter`; independent steps keep the plan's order); PlanError
    naming the cycle when there is one."""
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for s in plan.steps:
        sorter.add(s.id, *sorted(dependencies(s)))
    try:
        return list(sorter.static_order())
    except graphlib.CycleError as e:
        # graphlib lists the cycle along "is needed by"; say it along "depends on"
        cycle: list[str] = list(reversed(e.args[1]))
        raise PlanError(
            f"plan has a cycle: {' -> '.join(cycle)}; steps may only depend on earlier results", step=cycle[0]
        ) from None


def validate_plan(
    plan: Plan, registry: SkillRegistry, budget: Budget | None = None, task_inputs: Mapping[str, Any] | None = None
) -> dict[str, BaseModel]:
    """Check ``plan`` against the registry and budget. Returns the validated inputs of the
    steps whose inputs are all literals (the rest are validated once their refs resolve).
    ``task_inputs`` fills ``{"$input": path}`` references (see ``tinyfleet_core.refs``)."""
    if not plan.steps:
        raise PlanError("plan has no steps; a plan needs at least one step")
    ids: set[str] = set()
    for s in plan.steps:
        if s.id in ids:
            raise PlanError(f"step id {s.id!r} is used twice; step ids must be unique", step=s.id)
        ids.add(s.id)
    if budget is not None and len(plan.steps) > budget.max_steps:
        raise PlanError(
            f"plan has {len(plan.steps)} steps, over the budget's max_steps={budget.max_steps}; "
            "raise the budget or split the task"
        )
    validated: dict[str, BaseModel] = {}
    for s in plan.steps:
        try:
            skill = registry.get(s.skill)
        except PlanError as e:
            raise PlanError(f"step {s.id!r}: {e}", step=s.id) from None
        for ref in references(s):
            if ref not in ids:
                raise PlanError(f"step {s.id!r} references missing step {ref!r}", step=s.id)
            if ref == s.id:
                raise PlanError(f"step {s.id!r} references itself", step=s.id)
        for a in s.after:
            if a not in ids:
                raise PlanError(f"step {s.id!r} runs after missing step {a!r}", step=s.id)
        if isinstance(s.verify, str) and skill.verifier is not None and s.verify != skill.verifier.name:
            raise PlanError(
                f"step {s.id!r} asks for verifier {s.verify!r}; skill {s.skill!r} has {skill.verifier.name!r}",
                step=s.id,
            )
        if s.strategy.start_tier is not None and s.strategy.start_tier not in [*skill.tier_names(), "large"]:
            raise PlanError(
                f"step {s.id!r} starts at unknown tier {s.strategy.start_tier!r}; "
                f"{s.skill} has tiers {skill.tier_names() + ['large']}",
                step=s.id,
            )
        literal = step_inputs_with_task_inputs(s, task_inputs)  # $input filled in; None: resolved at run time
        if not has_refs(s) and literal is not None:
            try:
                inp = validate_payload(skill.input_model, literal, what=f"step {s.id!r} ({s.skill}) input")
                if skill.precheck is not None:
                    skill.precheck(inp)
            except InputError as e:
                msg = str(e) if str(e).startswith("step ") else f"step {s.id!r} ({s.skill}) input: {e}"
                raise PlanError(msg, step=s.id) from None
            validated[s.id] = inp
    topological_order(plan)
    if isinstance(plan.output, str):
        outs = [plan.output]
    else:
        outs = list(plan.output)
    for o in outs:
        if split_ref(o)[0] not in ids:
            raise PlanError(f"plan output refers to missing step {o!r}")
    return validated

