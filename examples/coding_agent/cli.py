"""``python -m examples.coding_agent SPEC --out DIR [--json] [--planner spec|openai]
[--executor ray|local] [--address ADDR] [--particles N]``.

Writes ``DIR/<module>.py`` (the module), ``DIR/test_<module>.py`` (the spec's tests, importing
the module; run it with pytest) and ``DIR/report.json`` (the BuildResult, RunReport included).
Exit status as ``tinyfleet``'s: 0 the module passed the whole test file; 1 it did not (a function
or the module failed); 2 bad input or settings, with a one-line message naming the problem.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from orchestrator.exit_status import run_guarded
from orchestrator.progress import Progress, summary
from tinyfleet_core.errors import InputError
from tinyfleet_core.models import Strategy

from .agent import BuildResult, build_module, make_fleet
from .spec import Spec, load_spec

__all__ = ["build_parser", "main", "write_outputs"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m examples.coding_agent",
        description="Write a Python module from a spec (docstring, stubs, tests) with small LLMs, verified in a sandbox.",
    )
    p.add_argument("spec", help="the spec: a .py file (docstring, function stubs, test_* functions) or a .json spec")
    p.add_argument("--out", required=True, help="directory for <module>.py, test_<module>.py and report.json")
    p.add_argument("--json", action="store_true", help="print the build result as JSON on stdout")
    p.add_argument("--planner", choices=["spec", "openai"], default="spec",
                   help="spec: plan from the spec without a model (default); openai: the large model plans")
    p.add_argument("--executor", choices=["ray", "local"], default="ray")
    p.add_argument("--address", default=None, help="Ray address to attach to (inside 'ray job submit' RAY_ADDRESS is used)")
    p.add_argument("--particles", type=int, default=4, help="small-LLM candidates per function, written in parallel (1-64)")
    return p


def write_outputs(result: BuildResult, spec: Spec, out: Path) -> list[Path]:
    """Write the module, its test file and the report into ``out``; return the paths."""
    out.mkdir(parents=True, exist_ok=True)
    module = out / f"{spec.module}.py"
    module.write_text(result.source, encoding="utf-8")
    tests = out / f"test_{spec.module}.py"
    imports = f"from {spec.module} import {', '.join(spec.names)}\n\n\n"
    tests.write_text(spec.header + imports + spec.tests, encoding="utf-8")
    report = out / "report.json"
    report.write_text(result.model_dump_json(indent=2), encoding="utf-8")
    return [module, tests, report]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded("coding_agent", lambda: _build(args))


def _build(args: argparse.Namespace) -> int:
    if not 1 <= args.particles <= 64:
        raise InputError(f"--particles must be between 1 and 64, got {args.particles}")
    strategy = Strategy(particles=args.particles, select="first_verified")
    spec = load_spec(args.spec)
    fleet = make_fleet(args.planner, executor=args.executor, address=args.address, strategy=strategy)
    fleet.add_hook(Progress())

    async def go() -> BuildResult:
        try:
            return await build_module(spec, fleet, strategy=strategy)
        finally:
            await fleet.close()

    result = asyncio.run(go())
    paths = write_outputs(result, spec, Path(args.out))
    if args.json:
        print(json.dumps(json.loads(result.model_dump_json()), indent=2))
    else:
        print(summary(result.report))
        print(result.summary())
        print("wrote: " + ", ".join(str(p) for p in paths))
    return 0 if result.verified else 1
