"""learning: one stream of maze tasks with a distribution shift, through a fleet that learns from
its escalations and one that does not, in one run.

The stream, in windows of ``W`` tasks (one batch task per window, local executor):

- ``before`` windows: 7x7 perfect mazes (:func:`workers.kits.maze.generate`), what the bundled
  ``maze.route-trm-7`` was trained on;
- ``shifted`` windows: 7x7 grids of a family it never saw: a looped maze (walls knocked out,
  several ways through; :func:`workers.kits.maze_families.generate_family` ``"loops"``) of
  5x5 inside the 7x7 wall ring (:func:`shifted_grid`). The bundled TRM answers about 15% of them,
  the bundled HRM about 18%; the rest climb to the greedy heuristic and BFS (verified).

Both fleets see the same tasks in the same order and the same ladder (trm -> hrm -> greedy ->
bfs). The learning fleet, after each window, adds the window's lessons (from its journal) to
its store and runs :func:`workers.training.learn.learn` for ``learn_minutes`` (the same gate as
``tinyfleet learn``); a promoted version is loaded by the running pool between batches. Each
fleet has its own learned directory (a temporary one), so the fleet without learning always
serves the bundled checkpoint and nothing outside the temporary directories is written.

Per window and fleet: ``tiny_share`` (steps settled at trm or hrm), ``higher_calls`` (tier
dispatches above the tiny tiers: heuristic and exact; this offline ladder has no large model),
``verified_share``, ``cpu_s`` (the run's worker + verifier + driver seconds) plus ``learn_cpu_s``
(the learner's process CPU seconds after that window), and the checkpoint version that served.

Target (can fail): on the shifted part, the learning fleet's tiny-tier share in the last window
is at least 30 points above its first shifted window and above the other fleet's last window,
with 100% of the steps of both fleets verified.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from orchestrator.fleet import Fleet
from tinyfleet_core.models import RunReport, Task
from workers.kits import maze, maze_families
from workers.training.learn import learn
from workers.training.lessons import LessonStore, lessons_from_journal

__all__ = ["run", "shifted_grid", "stream", "TINY", "TARGET_POINTS"]

TINY = ("trm", "hrm")
TARGET_POINTS = 30.0
SEED = 16


def shifted_grid(side: int, rng: random.Random) -> list[str]:
    """A ``side`` x ``side`` grid: a looped maze of (side-2) x (side-2) inside a wall ring."""
    inner = maze_families.generate_family("loops", side - 2, side - 2, rng)
    return ["#" * side, *("#" + row + "#" for row in inner), "#" * side]


def stream(windows_before: int, windows_shifted: int, per_window: int, seed: int = SEED) -> list[tuple[str, list[list[str]]]]:
    """(phase, grids) per window: perfect 7x7 mazes, then the shifted family."""
    rng = random.Random(seed)
    out: list[tuple[str, list[list[str]]]] = []
    for _ in range(windows_before):
        out.append(("before", [maze.generate(7, rng) for _ in range(per_window)]))
    for _ in range(windows_shifted):
        out.append(("shifted", [shifted_grid(7, rng) for _ in range(per_window)]))
    return out


@contextmanager
def _learned_dir(path: Path) -> Iterator[None]:
    old = os.environ.get("TINYFLEET_LEARNED_DIR")
    os.environ["TINYFLEET_LEARNED_DIR"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TINYFLEET_LEARNED_DIR", None)
        else:
            os.environ["TINYFLEET_LEARNED_DIR"] = old


def _window_row(fleet_name: str, k: int, phase: str, report: RunReport) -> dict[str, Any]:
    steps = report.steps
    n = max(len(steps), 1)
    tiny = sum(1 for s in steps if s.tier in TINY)
    higher = sum(1 for s in steps for t in s.tiers_tried if t not in TINY)
    versions = sorted({str(t.attempt.info.get("checkpoint", "")).split("@")[-1]
                       for s in steps for t in s.trials if t.attempt.tier == "trm" and t.attempt.info.get("checkpoint")})
    tot = report.totals
    return {
        "fleet": fleet_name, "window": k, "phase": phase, "steps": len(steps),
        "tiny_share": round(100.0 * tiny / n, 1), "higher_calls": higher,
        "verified_share": round(100.0 * tot.verified / n, 1), "cpu_s": round(tot.cpu_seconds, 2),
        "learn_cpu_s": 0.0, "trm_version": ",".join(versions) or "-", "wall_s": round(tot.wall_s, 2),
    }


def _run_fleet(name: str, windows: list[tuple[str, list[list[str]]]], base: Path, learning: bool,
               learn_minutes: float, eval_n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = []
    learns: list[dict[str, Any]] = []
    runs = base / "runs"
    with _learned_dir(base / "learned"), Fleet(executor="local", journal_dir=runs) as fleet:
        for k, (phase, grids) in enumerate(windows):
            task = Task(id=f"{name}-w{k}", skill="maze.route", inputs={"items": [{"grid": g} for g in grids]})
            report = fleet.run_sync(task)
            row = _window_row(name, k, phase, report)
            if learning and k < len(windows) - 1:
                store = LessonStore("maze.route")
                try:
                    row["new_lessons"] = store.add(lessons_from_journal(runs / f"{task.id}.sqlite"))
                finally:
                    store.close()
                out = learn("maze.route", "trm", size=7, minutes=learn_minutes, min_lessons=20, eval_n=eval_n,
                            seed=k, log=open(os.devnull, "w"))  # noqa: SIM115
                row["learn_cpu_s"] = round(out.cpu_s, 2)
                row["learn"] = out.status + (f" {out.version}" if out.version else "")
                learns.append({"after_window": k, "status": out.status, "version": out.version, "parent": out.parent,
                               "evals": out.evals, "steps": out.steps, "lessons_train": out.lessons_train,
                               "lessons_held": out.lessons_held, "cpu_s": round(out.cpu_s, 2)})
            rows.append(row)
    return rows, learns


def run(quick: bool, tiny: bool = False) -> dict[str, Any]:
    """The stream through both fleets; rows per window and fleet, the target, a plot."""
    if tiny:
        before, shifted, per, minutes, eval_n = 1, 2, 12, 0.1, 100
    elif quick:
        before, shifted, per, minutes, eval_n = 1, 4, 40, 0.5, 200
    else:
        before, shifted, per, minutes, eval_n = 2, 6, 60, 1.5, 300
    windows = stream(before, shifted, per)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tinyfleet-bench-learning-") as tmp:
        off, _ = _run_fleet("no_learning", windows, Path(tmp) / "off", False, minutes, eval_n)
        on, learns = _run_fleet("learning", windows, Path(tmp) / "on", True, minutes, eval_n)
    wall = time.perf_counter() - t0
    rows = off + on
    for r in rows:
        r["total_cpu_s"] = round(r["cpu_s"] + r["learn_cpu_s"], 2)
    sh_on = [r for r in on if r["phase"] == "shifted"]
    sh_off = [r for r in off if r["phase"] == "shifted"]
    gain = sh_on[-1]["tiny_share"] - sh_on[0]["tiny_share"]
    beats = sh_on[-1]["tiny_share"] > sh_off[-1]["tiny_share"]
    all_verified = all(r["verified_share"] == 100.0 for r in rows)
    ok = gain >= TARGET_POINTS and beats and all_verified
    summary = (
        f"shifted stream ({shifted} windows of {per} mazes after {before} unshifted): learning fleet tiny-tier share "
        f"{sh_on[0]['tiny_share']:.1f}% -> {sh_on[-1]['tiny_share']:.1f}% ({gain:+.1f} points; target +{TARGET_POINTS:g}), "
        f"without learning {sh_off[0]['tiny_share']:.1f}% -> {sh_off[-1]['tiny_share']:.1f}%; higher-tier calls in the last "
        f"window {sh_on[-1]['higher_calls']} vs {sh_off[-1]['higher_calls']}; verified {'100% of steps' if all_verified else 'NOT 100%'}; "
        f"learner CPU {sum(r['learn_cpu_s'] for r in on):.0f} s; wall {wall:.0f} s"
    )
    return {
        "rows": rows,
        "summary": summary,
        "ok": ok,
        "learns": learns,
        "wall_s": round(wall, 1),
        "plot": {"kind": "line", "x": "window", "group": "fleet", "y": ["tiny_share", "verified_share"],
                 "title": "learning: tiny-tier share per window (shift after the first window(s))"},
    }
