"""The coding agent: a module written from a spec by small LLMs, verified in a sandbox.

From a spec (a module docstring, function stubs, tests), one ``code.function`` step per
function in dependency order; small-LLM followers write several candidates per function in
parallel; the sandbox runs each function's tests; the first passing candidate wins, and a
function no candidate passes escalates to the large model; finally the assembled module runs
the whole test file (the ``code.module`` step).

    from examples.coding_agent import build_module, load_spec, make_fleet
    result = await build_module(load_spec("examples/coding_agent/specs/textstats.py"), make_fleet(executor="local"))

See docs/coding-agent.md.
"""

from .agent import BuildResult, Candidate, FunctionResult, ModuleCheck, build_module, make_fleet
from .assemble import assemble, stub_part
from .cli import main, write_outputs
from .planner import DEFAULT_STRATEGY, SpecPlanner, adopt_plan, spec_plan, spec_task
from .skills import (
    ContextTestsVerifier,
    FunctionTask,
    ModuleInput,
    ModuleOutput,
    ModuleTestsVerifier,
    coding_registry,
    function_skill,
    module_skill,
    register,
)
from .spec import FunctionSpec, Spec, load_spec, parse_json_spec, parse_python_spec

__all__ = [
    "BuildResult",
    "Candidate",
    "ContextTestsVerifier",
    "DEFAULT_STRATEGY",
    "FunctionResult",
    "FunctionSpec",
    "FunctionTask",
    "ModuleCheck",
    "ModuleInput",
    "ModuleOutput",
    "ModuleTestsVerifier",
    "Spec",
    "SpecPlanner",
    "adopt_plan",
    "assemble",
    "build_module",
    "coding_registry",
    "function_skill",
    "load_spec",
    "main",
    "make_fleet",
    "module_skill",
    "parse_json_spec",
    "parse_python_spec",
    "register",
    "spec_plan",
    "spec_task",
    "stub_part",
    "write_outputs",
]
