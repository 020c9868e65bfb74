"""Plans for a spec: the deterministic spec planner, and the check an LLM's plan must pass.

The plan for a spec (what :func:`spec_plan` builds and what an LLM planner is asked for)::

    words      code.function  {signature, doc, tests, context: []}
    sentences  code.function  {..., context: []}                         (parallel with words)
    top_words  code.function  {..., context: [{"$ref": "words.code"}]}   (after words)
    summary    code.function  {..., context: [{"$ref": "words.code"}, {"$ref": "sentences.code"},
                                              {"$ref": "top_words.code"}]}
    module     code.module    {module, doc, header, names, parts: [{"$ref": "<each>.code"}], tests}
    output: "module"

``context`` carries the verified code of every function a function calls (directly or not), so
its tests can run; the ``$ref`` edges are also what puts a function after the ones it calls.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ValidationError

from planners.base import Planned, Planner
from planners.plan_check import references
from tinyfleet_core.errors import EscalationFailed, PlanError
from tinyfleet_core.models import Attempt, Plan, Step, StepResult, Strategy, Task
from tinyfleet_core.refs import expand_task_inputs
from tinyfleet_core.validation import first_problem
from workers.base import Skill
from workers.code import function_name
from workers.registry import SkillRegistry

from .spec import Spec

__all__ = ["SpecPlanner", "spec_plan", "spec_task", "adopt_plan", "step_ids", "DEFAULT_STRATEGY"]

DEFAULT_STRATEGY = Strategy(particles=4, select="first_verified")
"""Four small-LLM candidates per function; the first that passes its tests wins."""

_STEP_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")


def step_ids(spec: Spec) -> tuple[dict[str, str], str]:
    """(function name -> step id, the module step's id): the name itself where it can be."""
    ids: dict[str, str] = {}
    for k, f in enumerate(spec.functions):
        ids[f.name] = f.name if _STEP_ID.match(f.name) else f"fn{k}"
    module = "module"
    while module in ids.values():
        module += "_"
    return ids, module


def _function_doc(spec: Spec, doc: str) -> str:
    about = spec.doc.strip()
    return f"{doc}\n\n(Part of module {spec.module}{': ' + about if about else ''})"


def spec_plan(spec: Spec, strategy: Strategy = DEFAULT_STRATEGY) -> Plan:
    """The plan for ``spec``: one ``code.function`` step per function, dependencies first, then
    the ``code.module`` step that assembles and tests the module."""
    ids, module_id = step_ids(spec)
    steps = [
        Step(
            id=ids[f.name],
            skill="code.function",
            inputs={
                "signature": f.signature,
                "doc": _function_doc(spec, f.doc),
                "tests": f.tests,
                "context": [{"$ref": f"{ids[d]}.code"} for d in spec.needs(f.name)],
            },
            strategy=strategy,
        )
        for f in spec.functions
    ]
    steps.append(_module_step(spec, module_id, ids))
    return Plan(steps=steps, output=module_id)


def _module_step(spec: Spec, module_id: str, ids: dict[str, str]) -> Step:
    return Step(
        id=module_id,
        skill="code.module",
        inputs={
            "module": spec.module,
            "doc": spec.doc,
            "header": spec.header,
            "names": spec.names,
            "parts": [{"$ref": f"{ids[n]}.code"} for n in spec.names],
            "tests": spec.tests,
        },
    )


_GOAL = """Write the Python module {module!r} described by the spec in the inputs, as a plan of \
code.function steps (one per function in inputs.spec.functions, in the order given: each comes after \
the functions it calls) and one final code.module step.
- code.function step: id = the function's name; inputs = {{"signature": its signature, "doc": its doc, \
"tests": its tests (passed on unchanged, e.g. {{"$input": "spec.functions.<k>.tests"}}), \
"context": [{{"$ref": "<id>.code"}} for every name in inputs.needs[its name]]}}.
- code.module step: id "module"; inputs = {{"module", "doc", "header", "tests"}} copied from the spec, \
"names": every function's name in order, "parts": [{{"$ref": "<id>.code"}} for each function in order].
- output: "module"."""


def spec_task(spec: Spec) -> Task:
    """The task handed to the fleet: the spec as data, and a goal an LLM planner can follow."""
    return Task(
        goal=_GOAL.format(module=spec.module),
        inputs={"spec": spec.model_dump(mode="json"), "needs": {f.name: spec.needs(f.name) for f in spec.functions}},
    )


def adopt_plan(spec: Spec, plan: Plan, strategy: Strategy = DEFAULT_STRATEGY) -> Plan:
    """Check a planner's plan against the spec and return the plan to run.

    Each spec function must have exactly one ``code.function`` step, with the spec's tests, whose
    ``context`` references the steps of every function it calls (so it runs after them). The
    function steps get ``strategy``; the final ``code.module`` step is always the agent's own.
    ``{"$input": "spec.functions.0.tests"}`` references are read from the spec's task first.
    Raises PlanError naming the first problem."""
    by_name: dict[str, Step] = {}
    for s in expand_task_inputs(plan.steps, spec_task(spec).inputs):
        if s.skill == "code.module":
            continue
        if s.skill != "code.function":
            raise PlanError(f"step {s.id!r} uses skill {s.skill!r}; a spec is built from code.function steps only", step=s.id)
        try:
            name = function_name(str(s.inputs.get("signature", "")))
        except ValueError as e:
            raise PlanError(f"step {s.id!r}: {e}", step=s.id) from None
        if name not in spec.names:
            raise PlanError(f"step {s.id!r} writes {name}(), which is not a function of the spec", step=s.id)
        if name in by_name:
            raise PlanError(f"steps {by_name[name].id!r} and {s.id!r} both write {name}(); one step per function", step=s.id)
        if str(s.inputs.get("tests", "")).strip() != spec.function(name).tests.strip():
            raise PlanError(f"step {s.id!r} does not carry the spec's tests for {name}() unchanged", step=s.id)
        by_name[name] = s
    missing = [n for n in spec.names if n not in by_name]
    if missing:
        raise PlanError(f"the plan has no step for {', '.join(f'{n}()' for n in missing)}")
    ids = {n: s.id for n, s in by_name.items()}
    for name, s in by_name.items():
        has = set(references(s)) if isinstance(s.inputs.get("context"), list) else set()
        for dep in spec.needs(name):
            if ids[dep] not in has:
                raise PlanError(
                    f"step {s.id!r} ({name}()) does not get the code of {dep}(), which it calls: its context must "
                    f"reference {{'$ref': '{ids[dep]}.code'}}",
                    step=s.id,
                )
    module_id = "module"
    while module_id in ids.values():
        module_id += "_"
    steps = [by_name[n].model_copy(update={"strategy": strategy}) for n in spec.names]
    steps.append(_module_step(spec, module_id, ids))
    return Plan(steps=steps, output=module_id)


class SpecPlanner:
    """Plans a spec task deterministically (no model) with :func:`spec_plan`; escalations go to
    ``large`` (e.g. an :class:`~planners.openai.OpenAIPlanner`) when one is given."""

    def __init__(self, large: Planner | None = None, strategy: Strategy = DEFAULT_STRATEGY) -> None:
        self.large = large
        self.strategy = strategy
        self.name = f"spec+{large.name}" if large is not None else "spec"
        self.has_large_model = bool(large is not None and large.has_large_model)

    def __repr__(self) -> str:
        return f"SpecPlanner(large={self.large!r})"

    async def plan(self, task: Task, skills: SkillRegistry) -> Planned:
        raw = task.inputs.get("spec")
        if raw is None:
            raise PlanError("the spec planner plans coding tasks only: the task's inputs need a 'spec' (see spec_task)")
        try:
            spec = Spec.model_validate(raw)
        except ValidationError as e:
            raise PlanError(f"the task's 'spec' is not a spec: {first_problem(e)[1]}") from None
        return Planned(spec_plan(spec, self.strategy))

    async def replan(self, task: Task, plan: Plan, failures: list[StepResult], skills: SkillRegistry) -> Planned:
        raise PlanError("the spec planner does not replan: a function that no tier could write stays failed")

    async def solve(self, step: Step, inputs: BaseModel, skill: Skill) -> Attempt:
        if self.large is None:
            raise EscalationFailed(f"step {step.id!r}: no large model is configured for the spec planner", step=step.id)
        return await self.large.solve(step, inputs, skill)

    async def aclose(self) -> None:
        closer = getattr(self.large, "aclose", None)
        if closer is not None:
            await closer()

