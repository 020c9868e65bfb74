"""Command lines of the planning agent.

- ``demo_command(args)``: what ``tinyfleet demo`` runs (args: ``json``, ``out``, ``seed``,
  ``executor``, ``address``; optional ``scenario`` and ``planner``).
- ``main(argv)``: ``python -m examples.planning_agent --out DIR [--scenario FILE] [--seed K]
  [--planner rules|openai] [--executor ray|local] [--address ADDR] [--json]``.

Exit status as ``tinyfleet``'s: 0 the day was planned and every step verified; 1 a step
failed; 2 bad input (a one-line message naming the problem).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from orchestrator.console import render_report
from orchestrator.exit_status import interruptible, run_guarded
from orchestrator.fleet import Fleet
from orchestrator.progress import Progress
from orchestrator.view import document_from_report, write_html
from tinyfleet_core.errors import ConfigError, InputError

from .agent import DayResult, day_task, run_day
from .scenario import Scenario, generate, load_scenario
from .skills import planning_registry

__all__ = ["demo_command", "make_fleet", "describe", "build_parser", "main", "write_run_view"]


def make_fleet(planner: str = "rules", executor: str = "ray", address: str | None = None) -> Fleet:
    """A fleet with the built-in skills plus the delivery tools; ``planner`` rules or openai."""
    chosen = None
    if planner == "openai":
        from planners.openai import OpenAIPlanner

        chosen = OpenAIPlanner.from_env()  # ConfigError when OPENAI_API_KEY is missing
    elif planner != "rules":
        raise ConfigError(f"planner must be 'rules' or 'openai', got {planner!r}")
    return Fleet(planner=chosen, registry=planning_registry(), executor=executor, address=address)


def describe(result: DayResult) -> str:
    """The lines printed under the run summary: the day in one line and where the files are."""
    lines = []
    it = result.itinerary
    if it is not None:
        served = len(it["visits"])
        total = served + len(it["dropped"])
        lines.append(
            f"day: {served}/{total} stops served, expected demand {it['expected_demand']:.1f} units "
            f"(p10 {it['expected_demand_p10']:.1f}, p90 {it['expected_demand_p90']:.1f}), {it['total_moves']} moves, "
            f"back at the depot {it['return_clock']} ({it['return_min']:g} of {it['shift_minutes']:g} shift minutes)"
        )
        order = " -> ".join(f"{v['id']} {v['arrive_clock']}" for v in it["visits"])
        lines.append(f"tour: depot -> {order} -> depot" if order else "tour: no stop fits the shift")
        if it["dropped"]:
            lines.append(f"dropped: {', '.join(it['dropped'])}")
    else:
        lines.append("day: no itinerary (a step failed; see the report)")
    lines.append(f"report: {result.report_path}")
    if result.itinerary_path is not None:
        lines.append(f"itinerary: {result.itinerary_path}")
    if result.png_path is not None:
        lines.append(f"map: {result.png_path}")
    return "\n".join(lines)


async def _run(scenario: Scenario, fleet: Fleet, out: str, hook: Progress | None) -> DayResult:
    if hook is not None:
        fleet.executor.add_listener(hook.executor_event)
    try:
        return await run_day(scenario, fleet, out, on_event=hook)
    finally:
        if hook is not None:
            hook.close()
        await fleet.close()


def demo_command(args: argparse.Namespace) -> int:
    """Run the delivery day (``tinyfleet demo``). Prints the plan, the escalations and why,
    the day (the answer), the totals and the legend, or only the RunReport as JSON with
    ``--json``; progress goes to stderr."""
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is an existing file; give a directory (it is created if missing)")
    scenario_file = getattr(args, "scenario", None)
    scenario = load_scenario(scenario_file) if scenario_file else generate(int(getattr(args, "seed", 7)))
    fleet = make_fleet(getattr(args, "planner", "rules"), args.executor, args.address)
    hook = None if args.json else Progress()
    result = asyncio.run(interruptible(_run(scenario, fleet, args.out, hook)))
    write_run_view(result, scenario)
    if args.json:
        print(result.report.model_dump_json(indent=2))
    else:
        console = Console(file=sys.stdout, highlight=False, soft_wrap=True)
        render_report(result.report, console, reasons=hook.reasons if hook else None, answer=False, extra=describe(result).splitlines())
    return 0 if result.ok else 1


def write_run_view(result: DayResult, scenario: Scenario) -> Path:
    """Write ``run.html`` beside the report: the run viewer's self-contained page of the day
    (both phases' plans, every attempt and verdict; opens offline)."""
    tasks = [day_task(scenario, phase) for phase in "ab"][: len(result.plans)]
    document = document_from_report(result.report, plans=result.plans, tasks=tasks, source=str(result.report_path))
    return write_html(document, result.out_dir / "run.html")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m examples.planning_agent",
        description="Plan a delivery day on a city grid with a fleet of tiny verified models.",
    )
    p.add_argument("--out", default="planning-agent-out", help="directory for itinerary.json, route.png, report.json")
    p.add_argument("--scenario", default=None, help="scenario JSON file (default: a generated day)")
    p.add_argument("--seed", type=int, default=7, help="seed of the generated day")
    p.add_argument("--planner", choices=["rules", "openai"], default="rules")
    p.add_argument("--executor", choices=["ray", "local"], default="ray")
    p.add_argument("--address", default=None, help="Ray address to attach to (default: local Ray, or RAY_ADDRESS)")
    p.add_argument("--json", action="store_true", help="print only the RunReport as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args: Any = build_parser().parse_args(argv)
    return run_guarded("planning_agent", lambda: demo_command(args))
