"""The text a run tells on the command line, rendered with ``rich``: the plan and where each
step settled, every escalation with its reason, the answer drawn for its skill, the totals and
a one-line legend. Built from a :class:`RunReport` (and, when a run's events were seen, the
escalation reasons the run loop gave); nothing here changes a run.

Layer: the CLI's rendering, above the run loop and the Fleet (it reads reports only)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from orchestrator.journal import StepReader
from tinyfleet_core.models import RunReport, StepResult

__all__ = ["Escalation", "LEGEND", "escalations_of", "render_answer", "render_report", "totals_lines"]

LEGEND = (
    "legend: verified = a verifier checked the answer; accepted = no verifier, the worker was confident enough; "
    "particles = answers tried (augmented copies of a step's input); steps escalated = steps that climbed above "
    "their first tier, escalation events = every climb (a step can climb twice); cost per thought = what the run "
    "spent thinking: LLM tokens and dollars, plus CPU seconds priced per core-hour"
)
"""The one line under the totals that says what their words mean."""

_MAX_STEP_ROWS = 24
_MAX_ESCALATION_LINES = 8
_MAX_ANSWERS = 3


@dataclass(frozen=True)
class Escalation:
    """One climb of one step: from which tier to which, and why."""

    step_id: str
    from_tier: str
    to_tier: str
    reason: str


def _usd(x: float) -> str:
    """Dollars to three significant digits (CPU cents per run are often fractions of a cent)."""
    return "$0" if x == 0 else f"${x:.3g}"


def _derived_reason(step: StepResult, tier: str) -> str:
    """Why a step left ``tier``, read from its trials (for reports whose events were not seen,
    e.g. a resumed run)."""
    trials = [t for t in step.trials if t.attempt.tier == tier]
    if not trials:
        return "the tier gave no answer"
    rejected = [t for t in trials if t.verdict is not None and not t.verdict.ok]
    if rejected and len(rejected) == len(trials):
        v = rejected[0].verdict
        assert v is not None
        return f"verifier {v.verifier} rejected {len(rejected)} of {len(trials)} particle(s): {v.reason}"
    errors = [t.attempt.error for t in trials if t.attempt.output is None and t.attempt.error]
    if errors and len(errors) == len(trials):
        return f"no answer: {errors[0]}"
    best = max(t.attempt.confidence for t in trials)
    return f"best confidence {best:.2f} under the step's threshold"


def _rungs(step: StepResult) -> list[str]:
    """The rungs a step stood on, in order: each tier it tried, except that the tiers it
    compared under ``select="best_score"`` (``step.compared``: run together) are one rung,
    shown as ``cfc + classical``."""
    rungs: list[str] = []
    for t in step.tiers_tried:
        if rungs and t in step.compared and rungs[-1].split(" + ")[-1] in step.compared:
            rungs[-1] = f"{rungs[-1]} + {t}"
        else:
            rungs.append(t)
    return rungs


def escalations_of(report: RunReport, reasons: Mapping[tuple[str, str], str] | None = None) -> list[Escalation]:
    """Every climb in ``report`` (plan order), with the run loop's reason when ``reasons``
    (``(step_id, to_tier) -> reason``, from the run's escalation events) has it, else the
    reason its trials give (read back from the journal for a step a large run kept there)."""
    out: list[Escalation] = []
    with StepReader(report) as whole:
        for s in report.steps:
            rungs = _rungs(s)
            for a, b in zip(rungs, rungs[1:], strict=False):
                why = (reasons or {}).get((s.step_id, b)) or _derived_reason(whole(s), a.split(" + ")[0])
                out.append(Escalation(s.step_id, a, b, why))
    return out


def totals_lines(report: RunReport) -> list[str]:
    """The totals, one concern per line; each name means one thing."""
    t = report.totals
    events = sum(max(0, len(_rungs(s)) - 1) for s in report.steps)
    lines = [
        f"status: {report.status}" + (f" (stopped by budget {report.stopped_by})" if report.stopped_by else ""),
        f"steps: {t.steps}  verified: {t.verified}  accepted: {t.accepted}  failed: {t.failed}  skipped: {t.skipped}"
        + (f"  resumed: {t.resumed}" if t.resumed else ""),
        f"steps escalated: {t.escalated}  escalation events: {events}  settled per tier: "
        + (", ".join(f"{k} {v}" for k, v in t.per_tier.items()) or "-"),
        f"cost per thought: large-model calls {t.large_model_calls}, planner calls {t.planner_calls}, "
        f"tokens {t.tokens_in}+{t.tokens_out}, LLM {_usd(t.cost_usd)} + CPU {_usd(t.cpu_cost_usd)} "
        f"= {_usd(t.total_cost_usd)} ({_usd(t.cost_per_step_usd)}/step)",
        f"cpu: worker {t.worker_seconds:.3f} s + verifier {t.verifier_seconds:.3f} s + driver {t.driver_seconds:.3f} s "
        f"= {t.cpu_seconds:.3f} s ({t.worker_seconds_per_step * 1000:.2f} ms worker/step), particles {t.particles}"
        + (f", re-sends {t.resends}" if t.resends else ""),
        f"wall: {t.wall_s:.2f} s  planner: {report.planner}  executor: {report.executor}",
    ]
    if report.journal:
        lines.append(f"journal: {report.journal}")
    if report.error:
        lines.append(f"error: {report.error}")
    return lines


def _plan_table(report: RunReport) -> Table:
    """One row per step (a large plan: one row per skill, with its tier counts)."""
    table = Table(title=f"plan: {len(report.steps)} step{'s' if len(report.steps) != 1 else ''} ({report.planner} planner)",
                  title_justify="left", box=None, pad_edge=False, header_style="bold")
    if len(report.steps) <= _MAX_STEP_ROWS:
        for col in ("step", "skill", "tiers tried", "settled by", "status"):
            table.add_column(col)
        for s in report.steps:
            table.add_row(s.step_id, s.skill, " -> ".join(_rungs(s)) or "-", s.tier or "-", s.status + (" (resumed)" if s.resumed else ""))
        return table
    for col in ("steps", "skill", "settled by (steps)", "status (steps)"):
        table.add_column(col)
    by_skill: dict[str, list[StepResult]] = {}
    for s in report.steps:
        by_skill.setdefault(s.skill, []).append(s)
    for skill, steps in by_skill.items():
        tiers: dict[str, int] = {}
        status: dict[str, int] = {}
        for s in steps:
            tiers[s.tier or "-"] = tiers.get(s.tier or "-", 0) + 1
            status[s.status] = status.get(s.status, 0) + 1
        table.add_row(str(len(steps)), skill, ", ".join(f"{k} {v}" for k, v in tiers.items()), ", ".join(f"{k} {v}" for k, v in status.items()))
    return table


def _sudoku(grid: Sequence[Sequence[int]]) -> list[str]:
    n = len(grid)
    box_w = {4: 2, 6: 3, 9: 3}.get(n, n)
    box_h = {4: 2, 6: 2, 9: 3}.get(n, n)
    lines: list[str] = []
    for r, row in enumerate(grid):
        if r and r % box_h == 0:
            lines.append("-+-".join("-" * (2 * box_w - 1) for _ in range(n // box_w)))
        cells = [str(v) for v in row]
        lines.append(" | ".join(" ".join(cells[c: c + box_w]) for c in range(0, n, box_w)))
    return lines


def _maze(path: Sequence[Sequence[int]], grid: Sequence[str] | None) -> list[str]:
    moves = max(0, len(path) - 1)
    head = f"path: {moves} moves from {tuple(path[0]) if path else '-'} to {tuple(path[-1]) if path else '-'}"
    if not grid:
        return [head, " ".join(f"({r},{c})" for r, c in path[:40]) + (" ..." if len(path) > 40 else "")]
    rows = [list(line) for line in grid]
    for r, c in path:
        if 0 <= r < len(rows) and 0 <= c < len(rows[r]) and rows[r][c] == ".":
            rows[r][c] = "*"
    return [head, *("".join(row) for row in rows)]


def _forecast(out: Mapping[str, Any]) -> list[str]:
    mean, p10, p90 = out.get("mean", []), out.get("p10", []), out.get("p90", [])
    lines = [f"forecast: {len(mean)} step(s) ahead (mean, with the p10..p90 band)"]
    for k, m in enumerate(mean[:24]):
        lo = p10[k] if k < len(p10) else float("nan")
        hi = p90[k] if k < len(p90) else float("nan")
        lines.append(f"  t+{k + 1}: {m:.3f}  [{lo:.3f} .. {hi:.3f}]")
    if len(mean) > 24:
        lines.append(f"  ... {len(mean) - 24} more")
    return lines


def _code(out: Mapping[str, Any], step: StepResult | None) -> list[str]:
    verdicts = [t.verdict for t in (step.trials if step else []) if t.verdict is not None and t.attempt.output == out]
    verdict = next((v for v in verdicts if v.ok), verdicts[-1] if verdicts else None)
    lines = [f"code verdict: {'passed' if verdict.ok else 'failed'} ({verdict.verifier}): {verdict.reason}" if verdict else "code verdict: not verified"]
    code = str(out.get("code", "")).splitlines()
    lines += code[:30] + ([f"... {len(code) - 30} more lines"] if len(code) > 30 else [])
    return lines


def render_answer(skill: str, output: Any, *, step: StepResult | None = None, inputs: Mapping[str, Any] | None = None) -> list[str]:
    """One answer as text drawn for its skill: a sudoku grid, a maze with its path, forecast
    numbers, a code verdict and the code; JSON for any other skill."""
    if isinstance(output, Mapping):
        if skill == "sudoku.solve" and isinstance(output.get("solution"), list):
            return _sudoku(output["solution"])
        if skill == "maze.route" and isinstance(output.get("path"), list):
            grid = inputs.get("grid") if inputs else None
            return _maze(output["path"], grid if isinstance(grid, list) else None)
        if skill == "series.forecast" and isinstance(output.get("mean"), list):
            return _forecast(output)
        if skill == "code.function" and "code" in output:
            return _code(output, step)
    text = json.dumps(output, indent=2, default=str).splitlines()
    return text[:40] + ([f"... {len(text) - 40} more lines"] if len(text) > 40 else [])


def _answer_block(report: RunReport, inputs: Mapping[str, Any] | None) -> list[str]:
    with StepReader(report) as whole:
        return _answers(report, inputs, whole)


def _answers(report: RunReport, inputs: Mapping[str, Any] | None, whole: StepReader) -> list[str]:
    if report.output is None:
        return ["answer: none (no step settled the plan's output)"]
    steps = report.steps
    skills = {s.skill for s in steps}
    if isinstance(report.output, list) and len(skills) == 1 and len(report.output) == len(steps):
        (skill,) = skills
        items = inputs.get("items") if inputs else None
        lines = [f"answer ({skill}, {len(report.output)} items; the first {min(_MAX_ANSWERS, len(report.output))}):"]
        for k, (out, s) in enumerate(zip(report.output[:_MAX_ANSWERS], steps, strict=False)):
            item = items[k] if isinstance(items, list) and k < len(items) and isinstance(items[k], Mapping) else None
            lines.append(f"  [{k}] {s.step_id}:")
            lines += [f"    {ln}" for ln in render_answer(skill, out, step=whole(s), inputs=item)]
        if len(report.output) > _MAX_ANSWERS:
            lines.append(f"  ... {len(report.output) - _MAX_ANSWERS} more in the report (--json)")
        return lines
    if len(steps) == 1:
        s = whole(steps[0])
        return [f"answer ({s.skill}):", *(f"  {ln}" for ln in render_answer(s.skill, report.output, step=s, inputs=inputs))]
    return ["answer:", *(f"  {ln}" for ln in render_answer("", report.output))]


def render_report(
    report: RunReport,
    console: Console,
    *,
    reasons: Mapping[tuple[str, str], str] | None = None,
    inputs: Mapping[str, Any] | None = None,
    answer: bool = True,
    extra: Iterable[str] = (),
) -> None:
    """Print the story of a run: the plan and where each step settled, the escalations and
    why, the answer (``answer=False``: the caller prints its own), ``extra`` lines, the totals
    and the legend."""
    console.print(_plan_table(report))
    climbs = escalations_of(report, reasons)
    if climbs:
        console.print(Text(f"escalations ({len(climbs)} event{'s' if len(climbs) != 1 else ''}, {report.totals.escalated} step{'s' if report.totals.escalated != 1 else ''}):"))
        for e in climbs[:_MAX_ESCALATION_LINES]:
            console.print(Text(f"  {e.step_id}: {e.from_tier} -> {e.to_tier}: {e.reason}"))
        if len(climbs) > _MAX_ESCALATION_LINES:
            console.print(Text(f"  ... {len(climbs) - _MAX_ESCALATION_LINES} more in the report (--json)"))
    else:
        console.print(Text("escalations: none (every step settled on its first tier)"))
    if answer:
        for line in _answer_block(report, inputs):
            console.print(Text(line))
    for line in [*extra, *totals_lines(report), LEGEND]:
        console.print(Text(line))
