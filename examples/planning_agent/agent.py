"""The planning agent: plans and runs a delivery day on a fleet, in two phases.

Phase A (one DAG): one ``series.forecast`` step per stop, all in parallel, then the
planner's step ``delivery.choose`` that takes every forecast by ``$ref`` and picks and orders
the stops that fit the shift.

Phase B (one DAG, built from phase A's verified choice): one ``maze.route`` step per leg
(depot -> first stop -> ... -> depot), all in parallel, then ``delivery.itinerary`` that takes
every leg by ``$ref``. A city that fits the TRM frame model's frame is routed whole; in a
larger one, a leg that fits a window the TRM checkpoints read is routed on that window, so the
tiny model can take it (see ``legs.py``).

The legs depend on the chosen order, which no planner can know before the forecasts are in,
so phase B is planned once phase A's choice is verified. The two reports are merged into one
(steps of both phases, totals recomputed over all of them plus the planner's cost).

With the rule planner both phases are built here (``build_plan_a``, ``build_plan_b``). With an
LLM planner (``--planner openai``) the model plans phase A from a plain-language brief of the
day (``brief``); its plan is validated like any other, and checked to hold one
``delivery.choose`` step on this day's map. Phase B is mechanical and is built here for
either planner; its steps still climb to the large model when their tiers fail.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.escalation import ladder_for
from orchestrator.executor import PoolSpec
from orchestrator.fleet import Fleet
from orchestrator.ledger import totals
from planners.rules import RulePlanner
from tinyfleet_core.errors import ModelOutputError, TinyfleetError
from tinyfleet_core.models import Cost, Event, Plan, RunReport, RunStatus, Step, Strategy, Task
from tinyfleet_core.refs import expand_task_inputs
from workers.base import Tier

from .legs import city_fits, city_start_tier, frame_side, leg_grid, window_sizes
from .render import render_day
from .scenario import Scenario, hour_label
from .skills import ItineraryOutput

__all__ = ["DayResult", "build_plan_a", "build_plan_b", "brief", "day_task", "merge_reports", "run_day", "warm_pools"]

Hook = Callable[[Event], None]
log = logging.getLogger("tinyfleet.planning_agent")


@dataclass
class DayResult:
    """What ``run_day`` returns: the merged report, the itinerary (None when the day could
    not be planned), the files written, and each phase's own report and plan."""

    report: RunReport
    itinerary: dict[str, Any] | None
    out_dir: Path
    report_path: Path
    itinerary_path: Path | None
    png_path: Path | None
    phases: list[RunReport] = field(default_factory=list)
    plans: list[Plan] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.report.status == "succeeded"


# ---------------------------------------------------------------------------- plans


def _day_inputs(s: Scenario) -> dict[str, Any]:
    return {
        "grid": list(s.grid),
        "depot": list(s.depot),
        "stops": [{"id": st.id, "cell": list(st.cell)} for st in s.stops],
        "shift_minutes": s.shift_minutes,
        "minutes_per_move": s.minutes_per_move,
        "service_minutes": s.service_minutes,
    }


def forecast_step_id(stop_id: str) -> str:
    return f"fc_{stop_id}"


def build_plan_a(s: Scenario) -> Plan:
    """Forecasts (one per stop, in parallel) then ``delivery.choose``."""
    steps = []
    for st in s.stops:
        inputs: dict[str, Any] = {"values": st.history.values, "horizon": s.horizon}
        if st.history.timestamps is not None:
            inputs["timestamps"] = st.history.timestamps
        if s.season is not None:
            inputs["season"] = s.season
        steps.append(Step(id=forecast_step_id(st.id), skill="series.forecast", inputs=inputs))
    choose = {**_day_inputs(s), "forecasts": [{"$ref": forecast_step_id(st.id)} for st in s.stops]}
    steps.append(Step(id="choose", skill="delivery.choose", inputs=choose))
    return Plan(steps=steps, output="choose")


def build_plan_b(
    s: Scenario, choice: dict[str, Any], *, window_sizes: Sequence[int] = (), city_start: str | None = None,
    frame: int | None = None,
) -> Plan:
    """One ``maze.route`` step per leg of the chosen tour, then ``delivery.itinerary``.

    When the city fits ``frame`` (a served TRM frame model's), every leg is routed on the
    whole city from the bottom of the ladder. Otherwise a leg that fits a window of a side in
    ``window_sizes`` (see ``legs.leg_grid``) is routed on that window from the bottom of the
    ladder; the others are routed on the whole city, starting at tier ``city_start`` when
    given (skipping tiers that read only windows)."""
    cells = {st.id: st.cell for st in s.stops}
    order = list(choice["order"])
    tour = [s.depot, *[cells[i] for i in order], s.depot] if order else []
    steps, legs = [], []
    for k in range(len(tour) - 1):
        lg = leg_grid(s.grid, tour[k], tour[k + 1], window_sizes, frame)
        whole = lg.window is None and not city_fits(s.grid, frame)  # a whole city the frame model cannot read
        strategy = Strategy(start_tier=city_start) if whole and city_start else Strategy()
        steps.append(Step(id=f"leg{k}", skill="maze.route", inputs={"grid": lg.grid}, strategy=strategy))
        legs.append({"path": {"$ref": f"leg{k}.path"}, "offset": list(lg.offset)})
    itinerary = {**_day_inputs(s), "shift_start_hour": s.shift_start_hour, "choice": choice, "legs": legs}
    steps.append(Step(id="itinerary", skill="delivery.itinerary", inputs=itinerary))
    return Plan(steps=steps, output="itinerary")


def brief(s: Scenario) -> str:
    """The plain-language brief an LLM planner plans phase A from."""
    season = f", season {s.season}" if s.season else ""
    return (
        f"Plan today's deliveries ({s.name}). The task inputs hold the city map ('grid': '#' is a blocked street, "
        f"'.' an open one), the 'depot' cell and {len(s.stops)} delivery 'stops' (id and [row, col] cell). "
        "'histories' holds each stop's hourly demand history by stop id: values observed at timestamps in hours "
        "(some hours are missing). "
        f"First forecast each stop's demand for the next {s.horizon} hours: one series.forecast step per stop, "
        "with id 'fc_<stop id>' and inputs values {\"$input\": \"histories.<stop id>.values\"} and timestamps "
        f"{{\"$input\": \"histories.<stop id>.timestamps\"}}, horizon {s.horizon}{season}. These steps are "
        "independent, so they run in parallel. "
        f"Then one delivery.choose step with id 'choose' picks and orders the stops to serve in a "
        f"{s.shift_minutes:g}-minute shift starting at {hour_label(s.shift_start_hour)}. Its inputs: grid, depot, "
        "stops, shift_minutes, minutes_per_move and service_minutes, each as {\"$input\": \"<name>\"}, and "
        "'forecasts': a list with one {\"$ref\": \"fc_<stop id>\"} per stop, in the order of 'stops'. Never copy "
        "the data into the plan. The plan's output is 'choose'. "
        "Routing the chosen tour comes afterwards and is not part of this plan."
    )


def day_task(s: Scenario, phase: str = "a") -> Task:
    """The task of a phase. Phase A's inputs carry the whole day; an LLM planner reads a
    summary of them and passes them on by ``{"$input": path}``, so the data stays here."""
    if phase == "a":
        inputs = {
            **_day_inputs(s),
            "shift_start_hour": s.shift_start_hour,
            "horizon": s.horizon,
            "season": s.season,
            "histories": {st.id: st.history.model_dump(exclude_none=True) for st in s.stops},
        }
        return Task(id=f"{s.name}-a", goal=brief(s), inputs=inputs)
    return Task(id=f"{s.name}-b", goal=f"route the chosen tour of {s.name} and assemble its itinerary", inputs={})


def _check_llm_plan(plan: Plan, s: Scenario, task: Task) -> None:
    """An LLM's phase-A plan must end in one delivery.choose step on this day's map (read
    through its ``$input`` references). ModelOutputError (the model's failing, exit 1)."""
    chooses = [st for st in expand_task_inputs(plan.steps, task.inputs) if st.skill == "delivery.choose"]
    if len(chooses) != 1:
        raise ModelOutputError(f"the planner's plan has {len(chooses)} delivery.choose steps; it needs exactly one")
    inputs = chooses[0].inputs
    want = _day_inputs(s)
    for key in ("grid", "depot", "shift_minutes"):
        if not _same(inputs.get(key), want[key]):
            raise ModelOutputError(
                f"step {chooses[0].id!r}: input {key!r} does not match the day's {key}; copy it from the task",
                step=chooses[0].id,
            )


def _same(got: Any, want: Any) -> bool:
    """Equal as JSON (a tuple cell and a list cell are the same cell)."""
    return bool(json.loads(json.dumps(got)) == json.loads(json.dumps(want)))


# ---------------------------------------------------------------------------- reports


def _planner_cost(r: RunReport) -> Cost:
    """What planning cost in a report: its totals minus what its steps cost."""
    steps = Cost()
    for st in r.steps:
        if not st.resumed:
            steps = steps + st.cost
    t = r.totals
    return Cost(
        tokens_in=t.tokens_in - steps.tokens_in,
        tokens_out=t.tokens_out - steps.tokens_out,
        cost_usd=max(0.0, t.cost_usd - steps.cost_usd),
        large_calls=t.planner_calls,
    )


def merge_reports(
    task_id: str, reports: list[RunReport], *, output: Any, wall_s: float, planner_cost: Cost | None = None
) -> RunReport:
    """One report over several phases: every step, totals recomputed over all of them."""
    steps = [st for r in reports for st in r.steps]
    pc = planner_cost or Cost()
    for r in reports:
        pc = pc + _planner_cost(r)
    statuses = [r.status for r in reports]
    status: RunStatus = "succeeded"
    if any(x != "succeeded" for x in statuses):
        status = "partial" if "partial" in statuses else "failed"
    return RunReport(
        task_id=task_id,
        status=status,
        output=output,
        steps=steps,
        totals=totals(steps, pc, wall_s, pc.large_calls),
        stopped_by=next((r.stopped_by for r in reports if r.stopped_by), None),
        error=next((r.error for r in reports if r.error), None),
        planner=reports[-1].planner,
        executor=reports[-1].executor,
        journal=None,
    )


class _Relay:
    """Forwards both phases' events as one run: phase B's ``plan_ready`` counts every step,
    and a single ``run_done`` (with the merged totals) closes the day."""

    def __init__(self, hook: Hook | None, run_id: str) -> None:
        self.hook = hook
        self.run_id = run_id
        self.steps_before = 0

    def phase(self, name: str) -> Hook:
        def forward(ev: Event) -> None:
            if self.hook is None or ev.kind == "run_done":
                return
            if ev.kind == "plan_ready":
                steps = int(ev.data.get("steps", 0)) + self.steps_before
                ev = ev.model_copy(update={"data": {**ev.data, "steps": steps, "phase": name}})
            self.hook(ev.model_copy(update={"run_id": self.run_id}))

        return forward

    def done(self, report: RunReport) -> None:
        if self.hook is not None:
            self.hook(Event(kind="run_done", run_id=self.run_id, data={"status": report.status, "totals": report.totals.model_dump()}))


# ---------------------------------------------------------------------------- the day


async def warm_pools(fleet: Fleet, skill_name: str, start_tier: str | None = None) -> None:
    """Start the worker pools that steps of ``skill_name`` will climb through (from
    ``start_tier``; inline tools and the large model have none) ahead of use, so phase B's
    pools boot while phase A runs. A pool that cannot start is left to the run loop, which
    meets the same error when it dispatches there and records it on the step."""
    skill = fleet.registry.get(skill_name)
    probe = Step(id="warm", skill=skill_name, strategy=Strategy(start_tier=start_tier))

    async def start(tier: Tier) -> None:
        try:
            await fleet.executor.ensure_pool(PoolSpec(tier.pool_name, tier.worker, tier.pool))
        except TinyfleetError as e:
            log.info("warming pool %s of %s failed (the run will report it): %s", tier.pool_name, skill_name, e)

    tiers = ladder_for(probe, skill, fleet.policy, fleet.planner.has_large_model)
    await asyncio.gather(*(start(t) for t in tiers if t.kind != "large" and not t.pool.inline))


_CELL = re.compile(r"\[\s*(-?\d+),\s*(-?\d+)\s*\]")


def _itinerary_json(doc: dict[str, Any]) -> str:
    """Indented JSON with each [row, col] cell kept on one line."""
    return _CELL.sub(r"[\1, \2]", json.dumps(doc, indent=1)) + "\n"


async def _phases(
    scenario: Scenario,
    fleet: Fleet,
    out: Path,
    relay: _Relay,
    task_a: Task,
    plan_a: Plan,
    sizes: list[int],
    city_start: str | None,
    frame: int | None = None,
) -> tuple[list[RunReport], list[Plan], dict[str, Any] | None]:
    """Run phase A, then (when its choice is verified) phase B built from it."""
    report_a = await fleet.run(task_a, plan=plan_a, journal=out / "journal-a.sqlite", on_event=relay.phase("forecast+choose"))
    choose = next((st for st in report_a.steps if st.skill == "delivery.choose"), None)
    if report_a.status != "succeeded" or choose is None or choose.output is None:
        return [report_a], [plan_a], None
    relay.steps_before = len(plan_a.steps)
    plan_b = build_plan_b(scenario, choose.output, window_sizes=sizes, city_start=city_start, frame=frame)
    report_b = await fleet.run(day_task(scenario, "b"), plan=plan_b, journal=out / "journal-b.sqlite", on_event=relay.phase("route+itinerary"))
    itinerary = None
    if report_b.status == "succeeded" and isinstance(report_b.output, dict):
        itinerary = ItineraryOutput.model_validate(report_b.output).model_dump(mode="json")
    return [report_a, report_b], [plan_a, plan_b], itinerary


async def run_day(scenario: Scenario, fleet: Fleet, out_dir: str | Path, on_event: Hook | None = None) -> DayResult:
    """Plan and run the day on ``fleet`` (whose registry must hold the delivery skills, see
    ``skills.planning_registry``); write ``itinerary.json``, ``route.png`` and ``report.json``
    to ``out_dir``. Bad plans raise PlanError; a step that fails makes the report ``failed``
    (and no itinerary or map is written)."""
    started = time.monotonic()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    relay = _Relay(on_event, scenario.name)
    task_a = day_task(scenario, "a")
    planner_cost = Cost()
    if isinstance(fleet.planner, RulePlanner):
        plan_a = build_plan_a(scenario)
    else:
        plan_a, planner_cost = await fleet.plan(task_a)
        _check_llm_plan(plan_a, scenario, task_a)
    # phase B's routing pools boot while phase A forecasts (the window-only tier only when
    # some window size is served)
    sizes, frame = window_sizes(fleet.registry), frame_side(fleet.registry)
    city_start = city_start_tier(fleet.registry, grid=scenario.grid)
    warming = asyncio.ensure_future(warm_pools(fleet, "maze.route", None if sizes else city_start))
    try:
        reports, plans, itinerary = await _phases(scenario, fleet, out, relay, task_a, plan_a, sizes, city_start, frame)
    finally:
        await warming
    report = merge_reports(scenario.name, reports, output=itinerary, wall_s=time.monotonic() - started, planner_cost=planner_cost)
    relay.done(report)
    report_path = out / "report.json"
    report_path.write_text(report.model_dump_json(indent=2))
    itinerary_path = png_path = None
    if itinerary is not None:
        itinerary_path = out / "itinerary.json"
        itinerary_path.write_text(_itinerary_json({"scenario": scenario.name, **itinerary}))
        png_path = render_day(scenario, itinerary, out / "route.png")
    return DayResult(
        report=report,
        itinerary=itinerary,
        out_dir=out,
        report_path=report_path,
        itinerary_path=itinerary_path,
        png_path=png_path,
        phases=reports,
        plans=plans,
    )
