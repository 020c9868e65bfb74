"""The ``code.function`` kit: payload models, the sandboxed tests verifier and the skill.

Input ``{"signature": str, "doc": str, "tests": str}``; output ``{"code": str}`` (DESIGN
section 9). ``tests`` is Python whose names resolve to the code's functions: each top-level
``def test_*()`` is one test and the module's top-level asserts, if any, one more. The verdict
passes only when every test ran and passed in :mod:`workers.sandbox`, where the tests run in a
judge process and call the code, in its own sandboxed process, across a plain-data channel.

The skill has no tiny tier: an LLM follower tier (added elsewhere) or the large model writes
the code, and this verifier decides whether the step climbs.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tinyfleet_core.models import Verdict
from workers.base import PoolOptions, Skill, Verifier
from workers.sandbox import SandboxLimits, SandboxResult, plan_tests, run_tests

__all__ = ["CodeInput", "CodeOutput", "CodeTestsVerifier", "code_skill", "function_name", "sandbox_details"]

_MAX_SOURCE = 200_000


def function_name(signature: str) -> str:
    """The name a ``def`` signature declares; raises ValueError when it is not one def."""
    text = signature.strip()
    if not text.startswith(("def ", "async def ")):
        raise ValueError(f"signature must start with 'def', got {text[:40]!r}")
    header = text if text.endswith(":") else text + ":"
    try:
        tree = ast.parse(header + "\n    ...\n")
    except SyntaxError as e:
        raise ValueError(f"signature does not parse as a def: {e.msg}; write e.g. 'def add(a: int, b: int) -> int'") from None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.FunctionDef | ast.AsyncFunctionDef):
        raise ValueError("signature must be exactly one 'def name(...)' line")
    return tree.body[0].name


class CodeInput(BaseModel):
    """What to write: the function's signature, what it must do, and the tests that decide."""

    model_config = ConfigDict(extra="forbid")

    signature: str = Field(min_length=1, max_length=2_000, description="e.g. 'def add(a: int, b: int) -> int'")
    doc: str = Field(default="", max_length=20_000, description="what the function must do")
    tests: str = Field(min_length=1, max_length=_MAX_SOURCE, description="test_* functions and/or top-level asserts")

    @field_validator("signature")
    @classmethod
    def _signature_is_a_def(cls, v: str) -> str:
        function_name(v)
        return v

    @field_validator("tests")
    @classmethod
    def _tests_define_tests(cls, v: str) -> str:
        plan_tests(v)  # InputError (a ValueError) names the problem
        return v

    @property
    def name(self) -> str:
        return function_name(self.signature)


class CodeOutput(BaseModel):
    """The candidate: Python source that defines the function (helpers and imports allowed)."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, max_length=_MAX_SOURCE)


class CodeTestsVerifier(Verifier):
    """Runs the candidate and the tests in the sandbox; passes only when every test passed.

    ``parallel`` > 1 runs that many sandboxes at once within a batch (each is one process).
    """

    name = "code.tests"
    blocking = True

    def __init__(self, limits: SandboxLimits | None = None, parallel: int = 1) -> None:
        self.limits = limits or SandboxLimits()
        self.parallel = max(1, parallel)

    def check_batch(self, pairs: Sequence[tuple[BaseModel, BaseModel]]) -> list[Verdict]:
        for inp, ans in pairs:
            if not isinstance(inp, CodeInput) or not isinstance(ans, CodeOutput):
                raise TypeError(
                    f"code.tests checks (CodeInput, CodeOutput) pairs, got ({type(inp).__name__}, {type(ans).__name__})"
                )
        if self.parallel == 1 or len(pairs) == 1:
            return [self.check(inp, ans) for inp, ans in pairs]  # type: ignore[arg-type]
        with ThreadPoolExecutor(max_workers=self.parallel) as pool:
            return list(pool.map(lambda p: self.check(*p), pairs))

    def check(self, inp: CodeInput, ans: CodeOutput) -> Verdict:
        """One verdict: a static look at the code first, then the sandboxed tests."""
        problem = _static_problem(ans.code, inp.name)
        if problem is not None:
            return self.verdict(False, problem, 0.0, tests=[], contained=None)
        result = run_tests(ans.code, inp.tests, self.limits)
        return self.verdict(result.ok, result.reason, _score(result), **sandbox_details(result))


def _static_problem(code: str, name: str) -> str | None:
    """A syntax error, or a module that never defines ``name`` at its top level."""
    try:
        tree = ast.parse(code, "<candidate>")
    except SyntaxError as e:
        return f"the code does not parse: {e.msg} (line {e.lineno})"
    except (ValueError, RecursionError, MemoryError) as e:  # null bytes, absurd nesting
        return f"the code does not parse: {type(e).__name__}"
    return None if _binds_at_module_level(tree, name) else f"the code does not define {name}() at its top level"


def _binds_at_module_level(tree: ast.Module, name: str) -> bool:
    """Whether a module-level statement (also inside if/try/with/for) binds ``name``."""
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node.name == name:
                return True
            continue  # names bound inside a body are not module-level
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and node.id == name:
            return True
        if isinstance(node, ast.Import | ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            return True
        if not isinstance(node, ast.Lambda):
            stack.extend(ast.iter_child_nodes(node))
    return False


def _score(result: SandboxResult) -> float:
    return result.passed / len(result.tests) if result.tests else 0.0


def sandbox_details(result: SandboxResult) -> dict[str, Any]:
    """A sandbox result as Verdict details: every test with its outcome, and how it ran."""
    return {
        "tests": [{"name": t.name, "ok": t.ok, "error": t.error} for t in result.tests],
        "contained": result.contained,
        "violations": list(result.violations),
        "stdout": result.stdout,
        "stderr": result.stderr,
        "exit": result.exit,
        "wall_s": result.wall_s,
        "isolation": result.isolation,
    }


def _looks_like_code(inputs: dict[str, Any]) -> bool:
    return "signature" in inputs and "tests" in inputs


def code_skill(limits: SandboxLimits | None = None) -> Skill:
    """``code.function``: no tiny tier; an LLM tier or the large model answers, the sandbox rules."""
    return Skill(
        name="code.function",
        description=(
            "Write a Python function. Input {'signature': 'def f(...)', 'doc': str, 'tests': str}; "
            "output {'code': str}. Verified by running the tests in a sandbox."
        ),
        input_model=CodeInput,
        output_model=CodeOutput,
        ladder=[],
        fallback=None,
        verifier=CodeTestsVerifier(limits),
        recognize=_looks_like_code,
        # each verification is a sandboxed process: run them on a pool (Ray actors when the
        # fleet runs on Ray), two at a time, instead of in the driver
        verifier_pool=PoolOptions(replicas=2, num_cpus=0.5, max_batch=2, max_wait_ms=2.0, timeout_s=120.0),
    )
