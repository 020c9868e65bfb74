"""Build a module from a spec on a fleet: plan, write every function, verify, assemble, test.

    spec = load_spec("examples/coding_agent/specs/textstats.py")
    fleet = make_fleet(executor="local")                 # OPENAI_API_KEY, OPENAI_BASE_URL, ...
    result = await build_module(spec, fleet)
    print(result.source)

Every function is a ``code.function`` step: ``llm-small`` writes several candidates at once (the
step's particles), the sandbox runs the function's tests on each, the first that passes wins; when
none passes, the step climbs to the large model, whose answer is tested the same way. The
``code.module`` step assembles the verified parts and runs the whole test file on the module.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.fleet import Fleet
from planners.openai import OpenAIPlanner
from tinyfleet_core.errors import ConfigError, PlanError
from tinyfleet_core.models import Cost, Plan, RunReport, StepResult, Strategy
from tinyfleet_core.prices import PriceTable
from workers.code import function_name
from workers.llm.client import OpenAISettings

from .assemble import assemble, stub_part
from .planner import DEFAULT_STRATEGY, SpecPlanner, adopt_plan, spec_plan, spec_task
from .skills import coding_registry, register
from .spec import Spec

__all__ = ["BuildResult", "FunctionResult", "Candidate", "ModuleCheck", "build_module", "make_fleet"]

log = logging.getLogger("tinyfleet.coding_agent")


class Candidate(BaseModel):
    """One attempt at a function (or the module), and what the verifier said about it."""

    model_config = ConfigDict(extra="forbid")

    tier: str
    particle: int
    worker: str
    ok: bool
    reason: str
    contained: str | None = Field(default=None, description="why the sandbox stopped it (timeout, forbidden, early_exit, ...)")
    code: str | None = None


class FunctionResult(BaseModel):
    """How one function was written."""

    model_config = ConfigDict(extra="forbid")

    name: str
    step_id: str
    status: str
    tier: str | None = None
    escalated: bool = False
    tiers_tried: list[str] = Field(default_factory=list)
    calls: list[str] = Field(default_factory=list)
    code: str | None = None
    error: str | None = None
    candidates: list[Candidate] = Field(default_factory=list)


class ModuleCheck(BaseModel):
    """The final step: the assembled module against the whole test file."""

    model_config = ConfigDict(extra="forbid")

    step_id: str
    status: str
    tier: str | None = None
    reason: str = ""
    tests: list[dict[str, Any]] = Field(default_factory=list)


class BuildResult(BaseModel):
    """What :func:`build_module` returns; ``report`` is the fleet's RunReport."""

    model_config = ConfigDict(extra="forbid")

    module: str
    status: Literal["succeeded", "failed", "partial"]
    verified: bool = Field(description="the source passed the whole test file")
    source: str = Field(description="the module; functions nobody could write raise NotImplementedError")
    functions: list[FunctionResult]
    module_check: ModuleCheck
    plan_source: Literal["spec", "planner"]
    plan_note: str | None = None
    report: RunReport

    def summary(self) -> str:
        lines = [f"module {self.module}: {'verified against the whole test file' if self.verified else 'NOT verified'}"]
        for f in self.functions:
            rejected = sum(not c.ok for c in f.candidates)
            where = f"at {f.tier}" if f.tier else f"failed ({f.error})"
            lines.append(
                f"  {f.name}(): {f.status} {where}; {len(f.candidates)} candidate(s), {rejected} rejected"
                + (" - escalated" if f.escalated else "")
            )
        m = self.module_check
        lines.append(f"  module tests: {m.status}" + (f" ({m.reason})" if m.reason else ""))
        lines.append(f"plan: {self.plan_source}" + (f" ({self.plan_note})" if self.plan_note else ""))
        return "\n".join(lines)


def make_fleet(
    planner: str = "spec",
    *,
    executor: str = "ray",
    address: str | None = None,
    settings: OpenAISettings | None = None,
    small_settings: OpenAISettings | None = None,
    prices: PriceTable | None = None,
    strategy: Strategy = DEFAULT_STRATEGY,
) -> Fleet:
    """A fleet for the coding agent: the two coding skills, the large model behind
    ``settings`` (default: the environment) as the last tier, the small model behind
    ``small_settings`` (default: ``settings``), and ``planner`` ``spec`` (the deterministic
    spec planner) or ``openai`` (the large model plans). ConfigError without a key."""
    settings = settings if settings is not None else OpenAISettings.from_env()
    small_settings = small_settings if small_settings is not None else settings
    small_settings.require_key()
    large = OpenAIPlanner(settings, prices=prices)
    if planner == "spec":
        chosen: SpecPlanner | OpenAIPlanner = SpecPlanner(large, strategy)
    elif planner == "openai":
        chosen = large
    else:
        raise ConfigError(f"planner must be 'spec' or 'openai', got {planner!r}")
    return Fleet(planner=chosen, registry=coding_registry(small_settings, prices=prices), executor=executor, address=address)


async def build_module(spec: Spec, fleet: Fleet, *, strategy: Strategy = DEFAULT_STRATEGY) -> BuildResult:
    """Write, verify and assemble the module ``spec`` describes (see the module docs).

    With a :class:`SpecPlanner` the plan is :func:`spec_plan`; with another planner (an LLM)
    the planner's plan is used when it passes :func:`adopt_plan`, else the spec plan, and
    ``plan_note`` says why. Failed steps are not replanned: the large model is the last word."""
    register(fleet)
    task = spec_task(spec)
    planning = Cost()
    note: str | None = None
    source: Literal["spec", "planner"] = "spec"
    plan = spec_plan(spec, strategy)
    if not isinstance(fleet.planner, SpecPlanner):
        try:
            proposed, planning = await fleet.plan(task)
            plan, source = adopt_plan(spec, proposed, strategy), "planner"
        except PlanError as e:
            note = f"the planner's plan was not used: {e}"
            log.warning("%s; running the spec plan instead", note)
    policy = dataclasses.replace(fleet.policy, replans=0)
    report = await fleet.run(task, plan=plan, policy=policy)
    report = _with_planning(report, planning)
    return _result(spec, plan, report, source, note)


def _with_planning(report: RunReport, cost: Cost) -> RunReport:
    """Count planning done before ``fleet.run`` in the report's totals."""
    if cost == Cost():
        return report
    t = report.totals
    total_usd = t.cost_usd + cost.cost_usd
    totals = t.model_copy(
        update={
            "planner_calls": t.planner_calls + cost.large_calls,
            "tokens_in": t.tokens_in + cost.tokens_in,
            "tokens_out": t.tokens_out + cost.tokens_out,
            "cost_usd": round(total_usd, 8),
            "cost_per_step_usd": round(total_usd / t.steps, 8) if t.steps else 0.0,
        }
    )
    return report.model_copy(update={"totals": totals})


def _result(spec: Spec, plan: Plan, report: RunReport, source: Literal["spec", "planner"], note: str | None) -> BuildResult:
    steps = {r.step_id: r for r in report.steps}
    ids = {function_name(s.inputs["signature"]): s.id for s in plan.steps if s.skill == "code.function"}
    module_id = next(s.id for s in plan.steps if s.skill == "code.module")
    functions = [_function_result(f.name, ids[f.name], f.calls, steps.get(ids[f.name])) for f in spec.functions]
    mod = steps.get(module_id)
    check = _module_check(module_id, mod)
    verified = mod is not None and mod.status == "verified" and isinstance(mod.output, dict)
    if verified and mod is not None and mod.output is not None:
        text = str(mod.output["source"])
    else:
        parts = [f.code if f.code is not None else stub_part(spec.function(f.name).signature, spec.function(f.name).doc) for f in functions]
        text = assemble(spec.doc, spec.header, spec.names, parts)
    return BuildResult(
        module=spec.module,
        status=report.status,
        verified=verified,
        source=text,
        functions=functions,
        module_check=check,
        plan_source=source,
        plan_note=note,
        report=report,
    )


def _candidates(r: StepResult, code_field: str) -> list[Candidate]:
    out = []
    for t in r.trials:
        a, v = t.attempt, t.verdict
        code = a.output.get(code_field) if isinstance(a.output, dict) else None
        out.append(
            Candidate(
                tier=a.tier,
                particle=a.particle,
                worker=a.worker,
                ok=bool(v is not None and v.ok),
                reason=(v.reason if v is not None else "") or (a.error or ""),
                contained=(v.details.get("contained") if v is not None else None),
                code=code if isinstance(code, str) else None,
            )
        )
    return out


def _function_result(name: str, step_id: str, calls: list[str], r: StepResult | None) -> FunctionResult:
    if r is None:
        return FunctionResult(name=name, step_id=step_id, status="skipped", calls=calls, error="the step did not run")
    code = r.output.get("code") if r.settled and isinstance(r.output, dict) else None
    return FunctionResult(
        name=name,
        step_id=step_id,
        status=r.status,
        tier=r.tier,
        escalated=r.escalated,
        tiers_tried=r.tiers_tried,
        calls=calls,
        code=code if isinstance(code, str) else None,
        error=r.error,
        candidates=_candidates(r, "code"),
    )


def _module_check(step_id: str, r: StepResult | None) -> ModuleCheck:
    if r is None:
        return ModuleCheck(step_id=step_id, status="skipped", reason="the step did not run")
    last = r.trials[-1].verdict if r.trials else None
    chosen = next((t.verdict for t in r.trials if t.verdict is not None and t.verdict.ok), last)
    return ModuleCheck(
        step_id=step_id,
        status=r.status,
        tier=r.tier,
        reason=(chosen.reason if chosen is not None else "") or (r.error or ""),
        tests=list(chosen.details.get("tests", [])) if chosen is not None else [],
    )
