"""The coding agent's two skills.

``code.function`` (this package's variant of :func:`workers.code.code_skill`): the core skill's
input ``{"signature", "doc", "tests"}`` plus ``context``, the already verified code of the spec
functions this one calls (wired in the plan with ``{"$ref": "<step>.code"}``, which is also what
orders the steps). Its verifier loads the context, then the candidate, then runs the tests, all in
the sandbox. Its ladder: ``llm-small`` (a small LLM writing several candidates in parallel, one per
particle), then the large model (the planner's ``solve``).

``code.module``: a tool step that assembles the verified parts into one module
(:func:`~examples.coding_agent.assemble.assemble`); its verifier runs the whole test file on the
assembled source in the sandbox. When that fails the step climbs to the large model, which sees
the parts and the tests and answers with the whole module.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestrator.fleet import Fleet
from tinyfleet_core.models import Attempt, Verdict
from tinyfleet_core.prices import PriceTable
from workers.base import Job, PoolOptions, Skill, Tier, Verifier, Worker
from workers.code import CodeInput, CodeOutput, CodeTestsVerifier, sandbox_details
from workers.llm.client import OpenAISettings
from workers.llm.followers import llm_tier
from workers.registry import SkillRegistry
from workers.sandbox import SandboxLimits, plan_tests, run_tests

from .assemble import assemble

__all__ = [
    "FunctionTask",
    "ModuleInput",
    "ModuleOutput",
    "ContextTestsVerifier",
    "ModuleAssembler",
    "ModuleTestsVerifier",
    "function_skill",
    "module_skill",
    "coding_registry",
    "register",
    "FUNCTION_VERIFIER",
    "MODULE_VERIFIER",
]

FUNCTION_VERIFIER = "code.function_tests"
MODULE_VERIFIER = "code.module_tests"

# Sandboxes are processes: run them on a pool (Ray actors under Ray), two at a time.
_SANDBOX_POOL = PoolOptions(replicas=2, num_cpus=0.5, max_batch=2, max_wait_ms=2.0, timeout_s=300.0)
_TOOL_POOL = PoolOptions(inline=True, max_batch=16, max_wait_ms=0.0)


class FunctionTask(CodeInput):
    """A function to write: the core ``code.function`` input plus the code it may call."""

    context: list[str] = Field(
        default_factory=list,
        description="verified code of the functions this one may call, loaded before it; do not redefine them",
    )


class ModuleInput(BaseModel):
    """The verified parts of a module, in dependency order, and its whole test file."""

    model_config = ConfigDict(extra="forbid")

    module: str = Field(min_length=1, description="the module's name")
    doc: str = Field(default="", description="the module docstring")
    header: str = Field(default="", description="'from __future__' lines")
    names: list[str] = Field(min_length=1, description="the function each part was written for")
    parts: list[str] = Field(min_length=1, description="verified code, one part per function, in the order of names")
    tests: str = Field(min_length=1, description="the whole test file, run on the assembled module")

    @field_validator("tests")
    @classmethod
    def _has_tests(cls, v: str) -> str:
        plan_tests(v)
        return v


class ModuleOutput(BaseModel):
    """The module's source."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1)


class ContextTestsVerifier(CodeTestsVerifier):
    """Runs context + candidate + tests in the sandbox; passes only when every test passed."""

    name = FUNCTION_VERIFIER

    def check(self, inp: CodeInput, ans: CodeOutput) -> Verdict:
        context = inp.context if isinstance(inp, FunctionTask) else []
        if not context:
            return super().check(inp, ans)
        problem = _syntax_problem(ans.code)  # line numbers of the candidate, not of context + candidate
        if problem is not None:
            return self.verdict(False, problem, 0.0, tests=[], contained=None)
        return super().check(inp, ans.model_copy(update={"code": "\n\n".join([*context, ans.code])}))


class ModuleAssembler(Worker):
    """The ``code.module`` tool: assembles the parts (deterministic, confidence 1)."""

    name = "module.assemble"
    skill = "code.module"

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        out = []
        for job in jobs:
            inp = job.input
            assert isinstance(inp, ModuleInput)
            try:
                source = assemble(inp.doc, inp.header, inp.names, inp.parts)
            except ValueError as e:
                out.append(self.attempt(None, 0.0, job=job, error=str(e)))
                continue
            out.append(self.attempt(ModuleOutput(source=source), 1.0, job=job))
        return out


class ModuleTestsVerifier(Verifier):
    """Runs the whole test file on the assembled module in the sandbox."""

    name = MODULE_VERIFIER
    blocking = True

    def __init__(self, limits: SandboxLimits | None = None, parallel: int = 1) -> None:
        self.limits = limits or SandboxLimits(wall_s=30.0, cpu_s=20)
        self.parallel = max(1, parallel)

    def check_batch(self, pairs: Sequence[tuple[BaseModel, BaseModel]]) -> list[Verdict]:
        for inp, ans in pairs:
            if not isinstance(inp, ModuleInput) or not isinstance(ans, ModuleOutput):
                raise TypeError(f"{self.name} checks (ModuleInput, ModuleOutput) pairs, got ({type(inp).__name__}, {type(ans).__name__})")
        if self.parallel == 1 or len(pairs) == 1:
            return [self.check(inp, ans) for inp, ans in pairs]  # type: ignore[arg-type]
        with ThreadPoolExecutor(max_workers=self.parallel) as pool:
            return list(pool.map(lambda p: self.check(*p), pairs))

    def check(self, inp: ModuleInput, ans: ModuleOutput) -> Verdict:
        problem = _syntax_problem(ans.source)
        if problem is not None:
            return self.verdict(False, problem, 0.0, tests=[], contained=None)
        result = run_tests(ans.source, inp.tests, self.limits)
        return self.verdict(result.ok, result.reason, result.passed / max(1, len(result.tests)), **sandbox_details(result))


def _syntax_problem(code: str) -> str | None:
    try:
        ast.parse(code, "<candidate>")
    except SyntaxError as e:
        return f"the code does not parse: {e.msg} (line {e.lineno})"
    except (ValueError, RecursionError, MemoryError) as e:  # null bytes, absurd nesting
        return f"the code does not parse: {type(e).__name__}"
    return None


def _code_description() -> str:
    return (
        "Write one Python function. Input {'signature': 'def f(...)', 'doc': what it must do, 'tests': Python "
        "tests that will run against your code, 'context': code already written and loaded before yours "
        "(functions you may call; do not redefine them)}. Output {'code': Python source defining the function "
        "(imports and private helpers allowed, nothing printed, no I/O)}. Verified by running the tests in a sandbox."
    )


def _module_description() -> str:
    return (
        "Assemble a Python module from verified parts. Input {'module', 'doc', 'header', 'names', 'parts': one "
        "verified code part per function, 'tests': the whole test file}. Output {'source': the module's full "
        "Python source, defining every function in names}. Verified by running the whole test file in a sandbox."
    )


def function_skill(
    settings: OpenAISettings | None = None,
    *,
    prices: PriceTable | None = None,
    small_model: str | None = None,
    limits: SandboxLimits | None = None,
) -> Skill:
    """``code.function`` with context: ``llm-small`` particles, then the large model.

    ``settings`` None reads the environment (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``,
    ``TINYFLEET_SMALL_MODEL``) on the first batch."""
    skill = Skill(
        name="code.function",
        description=_code_description(),
        input_model=FunctionTask,
        output_model=CodeOutput,
        ladder=[],
        fallback=None,
        verifier=ContextTestsVerifier(limits),
        recognize=lambda inputs: "signature" in inputs and "tests" in inputs,
        verifier_pool=_SANDBOX_POOL,
    )
    skill.ladder.append(llm_tier(skill, settings=settings, prices=prices, model=small_model))
    return skill


def module_skill(limits: SandboxLimits | None = None) -> Skill:
    """``code.module``: the assembler tool, verified by the whole test file."""
    return Skill(
        name="code.module",
        description=_module_description(),
        input_model=ModuleInput,
        output_model=ModuleOutput,
        ladder=[Tier("module-assemble", ModuleAssembler, "tool", _TOOL_POOL)],
        verifier=ModuleTestsVerifier(limits),
        verifier_pool=_SANDBOX_POOL,
    )


def coding_registry(
    settings: OpenAISettings | None = None,
    *,
    prices: PriceTable | None = None,
    small_model: str | None = None,
    limits: SandboxLimits | None = None,
) -> SkillRegistry:
    """A registry with just the coding agent's two skills (keeps the planner's prompt short).
    ``limits`` apply to each function's sandbox (the module's gets 3x the time)."""
    module_limits = None
    if limits is not None:
        module_limits = dataclasses.replace(limits, wall_s=limits.wall_s * 3, cpu_s=limits.cpu_s * 3)
    return SkillRegistry(
        [function_skill(settings, prices=prices, small_model=small_model, limits=limits), module_skill(module_limits)]
    )


def register(fleet: Fleet, settings: OpenAISettings | None = None, *, prices: PriceTable | None = None) -> None:
    """Add both skills to ``fleet`` (replacing the core ``code.function``) unless it has them.

    Without ``settings`` the small model uses the fleet planner's settings when it has some,
    else the environment."""
    reg = fleet.registry
    if "code.function" in reg and issubclass(reg.get("code.function").input_model, FunctionTask) and "code.module" in reg:
        return
    if settings is None:
        settings = getattr(fleet.planner, "settings", None)
        if not isinstance(settings, OpenAISettings):
            settings = None
    fleet.add_skill(function_skill(settings, prices=prices))
    fleet.add_skill(module_skill())
