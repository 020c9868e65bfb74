"""The planning agent: a delivery day on a city grid, planned as a DAG and run on a fleet.

Forecast every stop's demand (liquid networks, in parallel, backtest-verified), choose and
order the stops that fit the shift (a verified tool step), route every leg (TRM / greedy /
BFS ladder, shortest-path verified), assemble the itinerary; write it as JSON plus a PNG map.

    from examples.planning_agent import generate, make_fleet, run_day
    result = await run_day(generate(seed=7), make_fleet(executor="local"), "out/")

See docs/planning-agent.md.
"""

from .agent import DayResult, brief, build_plan_a, build_plan_b, merge_reports, run_day
from .cli import demo_command, make_fleet
from .render import render_day
from .scenario import Scenario, StopSpec, generate, load_scenario, parse_scenario
from .skills import planning_registry, register

__all__ = [
    "DayResult",
    "Scenario",
    "StopSpec",
    "brief",
    "build_plan_a",
    "build_plan_b",
    "demo_command",
    "generate",
    "load_scenario",
    "make_fleet",
    "merge_reports",
    "parse_scenario",
    "planning_registry",
    "register",
    "render_day",
    "run_day",
]
