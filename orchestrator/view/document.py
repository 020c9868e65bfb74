"""The view document: what the run viewer's page draws, as plain JSON-ready data.

Built from a :class:`RunReport` (with the plans and tasks that produced it, when known) or from
a run journal (which holds the task, the plan and every finished step). Two parts:

- ``doc``: the run (status, planner, totals, per-tier breakdown) and one small record per
  step (skill, status, the tier that settled it, escalated, dependencies, times, cost). This
  is what the DAG, the totals and the timeline need, and stays small for 10,000 steps.
- ``details``: per step, every attempt (tier, worker, confidence, recursion steps, particles,
  verdict and reason, seconds, tokens, dollars) and the step's inputs and output. The page
  reads these only when a step is opened (inline in a written file, ``/step/<id>`` when served).

Secrets are stripped on the way out: every page, ``run.json``, ``step/<id>`` and event the
viewer sends passes through :func:`~orchestrator.view.scrub.redact_json`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from orchestrator.journal import Journal, report_steps
from orchestrator.ledger import totals as add_up
from planners.plan_check import dependencies
from tinyfleet_core.errors import InputError, PlanError
from tinyfleet_core.models import Cost, Plan, RunReport, Step, StepResult, Task, Trial
from tinyfleet_core.refs import resolve_references
from tinyfleet_core.validation import first_problem

__all__ = ["Details", "ViewDocument", "document_from_report", "document_from_journal", "load_document", "plan_document", "NOT_RECORDED"]

MAX_REPORT_BYTES = 512 << 20
"""Largest report file read (10,000 steps with forecasts are tens of MB)."""
MAX_PAYLOAD_CHARS = 200_000
"""An input or output larger than this (as JSON) is shown cut, with its size."""

NOT_RECORDED = [
    "batch sizes: the executor batches jobs per pool, but no report, journal or event records a batch's size",
    "checkpoint versions: shown where the worker records one in its attempt's info (info.checkpoint, the bundled TRM/HRM "
    "workers do); other workers' attempts name the worker and its extras (size, frame) only",
    "per-tier times of a finished run: a step records when it started and finished, not when each tier began "
    "(a live page has them from the run's events)",
]

ViewDocument = tuple[dict[str, Any], Mapping[str, dict[str, Any]]]
"""``(doc, details)``: see the module docstring."""


def _cost(c: Cost) -> dict[str, Any]:
    return {
        "usd": c.cost_usd,
        "tokens_in": c.tokens_in,
        "tokens_out": c.tokens_out,
        "worker_s": round(c.worker_s, 6),
        "verifier_s": round(c.verifier_s, 6),
        "particles": c.particles,
        "recursion_steps": c.recursion_steps,
        "large_calls": c.large_calls,
    }


def _trial(t: Trial) -> dict[str, Any]:
    a, v = t.attempt, t.verdict
    return {
        "tier": a.tier,
        "worker": a.worker,
        "particle": a.particle,
        "confidence": round(a.confidence, 4),
        "recursion_steps": a.cost.recursion_steps,
        "particles": a.cost.particles,
        "seconds": round(a.cost.worker_s + a.cost.verifier_s, 6),
        "tokens": a.cost.tokens_in + a.cost.tokens_out,
        "usd": a.cost.cost_usd,
        "error": a.error,
        "output": _cut(a.output),
        "info": a.info,
        "checkpoint": a.info.get("checkpoint") or a.info.get("checkpoint_version"),
        "verdict": None
        if v is None
        else {"ok": v.ok, "reason": v.reason, "verifier": v.verifier, "score": v.score, "judgement": v.judgement, "details": v.details},
    }


def _cut(value: Any) -> Any:
    """``value``, or a note with its size and head when its JSON is over MAX_PAYLOAD_CHARS."""
    text = json.dumps(value, default=str)
    if len(text) <= MAX_PAYLOAD_CHARS:
        return value
    return {"$cut": f"{len(text):,} characters; first {MAX_PAYLOAD_CHARS:,} shown", "head": text[:MAX_PAYLOAD_CHARS]}


def _step_record(step: Step | None, r: StepResult | None, step_id: str, skill: str) -> dict[str, Any]:
    deps = dependencies(step) if step is not None else []
    if r is None:
        return {"id": step_id, "skill": skill, "status": "pending", "tier": None, "escalated": False, "tiers": [],
                "deps": deps, "t0": 0.0, "t1": 0.0, "error": None, "resumed": False, "cost": _cost(Cost()), "workers": []}
    return {
        "id": r.step_id,
        "skill": r.skill,
        "status": r.status,
        "tier": r.tier,
        "escalated": r.escalated,
        "tiers": list(r.tiers_tried),
        "deps": deps,
        "t0": r.started_at,
        "t1": r.finished_at,
        "error": r.error,
        "resumed": r.resumed,
        "cost": _cost(r.cost),
        "workers": list(dict.fromkeys(t.attempt.worker for t in r.trials)),
    }


def _tier_breakdown(results: Iterable[StepResult]) -> dict[str, dict[str, Any]]:
    """Per tier: steps it settled, attempts, seconds, tokens, dollars and large-model calls."""
    out: dict[str, dict[str, Any]] = {}
    for r in results:
        for t in r.trials:
            a = t.attempt
            row = out.setdefault(a.tier or "?", {"settled": 0, "attempts": 0, "worker_s": 0.0, "tokens": 0, "usd": 0.0, "large_calls": 0})
            row["attempts"] += 1
            row["worker_s"] += a.cost.worker_s + a.cost.verifier_s
            row["tokens"] += a.cost.tokens_in + a.cost.tokens_out
            row["usd"] += a.cost.cost_usd
            row["large_calls"] += a.cost.large_calls
        if r.settled and r.tier:
            out.setdefault(r.tier, {"settled": 0, "attempts": 0, "worker_s": 0.0, "tokens": 0, "usd": 0.0, "large_calls": 0})
            out[r.tier]["settled"] += 1
    for row in out.values():
        row["worker_s"] = round(row["worker_s"], 6)
    return out


def _inputs_for(step: Step | None, task_inputs: Mapping[str, Any] | None) -> Any:
    """The step's inputs with ``$input`` references filled in when the task is known."""
    if step is None:
        return None
    try:
        return resolve_references(step.inputs, None, task_inputs)
    except (InputError, PlanError):
        return step.inputs


def _resolved(value: Any, outputs: Mapping[str, Any]) -> Any:
    try:
        return resolve_references(value, outputs, None)
    except (InputError, PlanError):
        return value  # a reference to a step with no output stays a reference


def build(
    results: Sequence[StepResult],
    *,
    plans: Sequence[Plan] = (),
    tasks: Sequence[Task] = (),
    run: Mapping[str, Any],
    totals: Mapping[str, Any] | None = None,
) -> ViewDocument:
    """The view document of ``results``, laid over the steps of ``plans`` (steps of a plan
    that have no result are ``pending``). ``run`` holds the run's header fields."""
    by_id = {r.step_id: r for r in results}
    plan_steps: dict[str, Step] = {}
    step_task: dict[str, Task | None] = {}
    for k, plan in enumerate(plans):
        for s in plan.steps:
            plan_steps[s.id] = s
            step_task[s.id] = tasks[k] if k < len(tasks) else None
    order = list(dict.fromkeys([*plan_steps, *by_id]))
    records = []
    for sid in order:
        step, r = plan_steps.get(sid), by_id.get(sid)
        records.append(_step_record(step, r, sid, r.skill if r else step.skill if step else "?"))
    doc = {
        "version": 1,
        "run": dict(run),
        "totals": dict(totals) if totals is not None else None,
        "tiers": _tier_breakdown(results),
        "steps": records,
        "not_recorded": NOT_RECORDED,
        "live": False,
        "done": run.get("status") not in (None, "running"),
    }
    return doc, Details(order, plan_steps, by_id, step_task)


class Details(Mapping[str, dict[str, Any]]):
    """Each step's details (attempts, inputs, output), made when first asked for: a page
    opens a few steps of a 10,000-step run; a written file takes them all."""

    def __init__(self, order: list[str], steps: dict[str, Step], results: dict[str, StepResult], tasks: dict[str, Task | None]) -> None:
        self._order, self._steps, self._results, self._tasks = order, steps, results, tasks
        self._outputs = {sid: r.output for sid, r in results.items() if r.output is not None}
        self._made: dict[str, dict[str, Any]] = {}

    def __getitem__(self, sid: str) -> dict[str, Any]:
        if sid not in self._made:
            if sid not in self._steps and sid not in self._results:
                raise KeyError(sid)
            step, r, task = self._steps.get(sid), self._results.get(sid), self._tasks.get(sid)
            inputs = _inputs_for(step, task.inputs if task else None)
            self._made[sid] = {
                "inputs": _cut(_resolved(inputs, self._outputs)) if inputs is not None else None,
                "output": _cut(r.output) if r is not None else None,
                "trials": [_trial(t) for t in r.trials] if r is not None else [],
                "strategy": step.strategy.model_dump() if step is not None else None,
                "error": r.error if r is not None else None,
            }
        return self._made[sid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)


def document_from_report(
    report: RunReport, *, plans: Sequence[Plan] = (), tasks: Sequence[Task] = (), source: str = ""
) -> ViewDocument:
    """The view of a finished run. Without ``plans``, the plan is read from the journal the
    report names, when that file is there; with neither, the DAG has no edges."""
    if not plans and report.journal and Path(report.journal).is_file():
        try:
            jr = Journal.open_existing(report.journal)
            plan, task = jr.plan(), jr.task()
            jr.close()
            plans, tasks = ([plan] if plan else []), ([task] if task else [])
        except (InputError, PlanError, ValidationError, sqlite3.DatabaseError, OSError):
            plans, tasks = (), ()
    goal = tasks[0].goal if tasks else ""
    run = {
        "task_id": report.task_id, "status": report.status, "goal": goal, "planner": report.planner,
        "executor": report.executor, "stopped_by": report.stopped_by, "error": report.error, "source": source,
        "has_plan": bool(plans),
    }
    steps = list(report_steps(report))  # whole: a large run keeps settled steps' trials in its journal only
    return build(steps, plans=plans, tasks=tasks, run=run, totals=report.totals.model_dump())


def _journal_meta(path: Path) -> dict[str, str]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT key, value FROM meta WHERE key IN ('status', 'started_at', 'finished_at')").fetchall())
    finally:
        db.close()


def document_from_journal(path: str | Path) -> ViewDocument:
    """The view of the run a journal recorded (finished, interrupted or still going). The
    totals are added up from the recorded steps (the planner's own tokens are not journalled)."""
    p = Path(path)
    try:
        jr = Journal.open_existing(p)
    except sqlite3.DatabaseError as e:
        raise InputError(f"{p} is not a tinyfleet journal (SQLite said: {e})") from None
    try:
        task, plan, entries = jr.task(), jr.plan(), jr.entries()
    finally:
        jr.close()
    assert task is not None and plan is not None  # open_existing checked both
    latest: dict[str, StepResult] = {}
    for r in entries:
        latest[r.step_id] = r
    meta = _journal_meta(p)
    started, finished = float(meta.get("started_at", 0) or 0), float(meta.get("finished_at", 0) or 0)
    results = [latest[s.id] for s in plan.steps if s.id in latest]
    wall = max(0.0, finished - started) if finished else 0.0
    tot = add_up(results, Cost(), wall, 0)
    run = {"task_id": task.id, "status": meta.get("status", "running"), "goal": task.goal, "planner": "", "executor": "",
           "stopped_by": None, "error": None, "source": str(p), "has_plan": True}
    return build(results, plans=[plan], tasks=[task], run=run, totals=tot.model_dump())


def plan_document(task: Task, plans: Sequence[Plan], results: Sequence[StepResult] = ()) -> ViewDocument:
    """The view of a run that is starting: the plan's steps, all pending (the live page)."""
    run = {"task_id": task.id, "status": "running", "goal": task.goal, "planner": "", "executor": "", "stopped_by": None,
           "error": None, "source": "live", "has_plan": True}
    return build(results, plans=plans, tasks=[task] * len(plans), run=run, totals=None)


def load_document(path: str | Path) -> ViewDocument:
    """The view of ``path``: a run journal (SQLite) or a RunReport JSON file. InputError names
    a file that is missing or neither."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p} does not exist; pass a run journal (runs/<task id>.sqlite) or a report written with --json")
    with p.open("rb") as f:
        head = f.read(16)
    if head.startswith(b"SQLite format 3"):
        return document_from_journal(p)
    if p.stat().st_size > MAX_REPORT_BYTES:
        raise InputError(f"{p} is over {MAX_REPORT_BYTES >> 20} MiB; view its journal instead")
    raw = p.read_bytes()
    try:
        report = RunReport.model_validate_json(raw)
    except ValidationError as e:
        where, what = first_problem(e)
        raise InputError(f"{p} is neither a run journal nor a RunReport JSON file ({where}: {what})") from None
    return document_from_report(report, source=str(p))
