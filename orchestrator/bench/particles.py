"""particles: accuracy and cost of 1, 2, 4, 8 test-time particles per step on the TRM tier
alone (``Policy(mode="tiny_only")``, ``Strategy(particles=k, select="vote")``).

Particles are validity-preserving augmentations mapped back (sudoku relabelling and
permutations, the 8 maze symmetries); the verifier rules on each and the vote picks among
the verified ones, so a step is right when any particle verifies. Runs on the largest
sudoku size whose checkpoint the product worker serves (9x9 when it does), once with the default givens
and once with fewer givens than the checkpoint was trained on, and on every bundled maze
size. A maze checkpoint under the product worker's 50% exact bar is served here anyway by a
bench-only subclass (named so in the table), since particles matter most where one pass is
weak. The issue sets no number; the check is that 8 particles are at least as accurate as 1.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from planners.rules import RulePlanner
from workers import maze, sudoku
from workers.base import PoolOptions, Tier
from workers.builtin import maze_skill, sudoku_skill
from workers.neural import TRMMazeWorker, TRMSudokuWorker, available_sizes
from workers.registry import SkillRegistry

from ..escalation import Policy
from ..executor import LocalExecutor
from ..fleet import Fleet
from ..models import Plan, Step, Strategy, Task
from .checkpoints import served_sizes, unserved_note

__all__ = ["run", "AnyCheckpointTRMMazeWorker", "PARTICLES"]

PARTICLES = (1, 2, 4, 8)
_POOL = PoolOptions(replicas=1, num_cpus=1.0, max_batch=512, max_wait_ms=5.0)


class AnyCheckpointTRMMazeWorker(TRMMazeWorker):
    """Bench-only: the TRM maze worker serving every bundled checkpoint, including those under
    the product worker's exact-accuracy bar."""

    name = "maze.trm-any"
    min_exact = 0.0


def _registry() -> SkillRegistry:
    s, m = sudoku_skill(), maze_skill()
    s.ladder = [Tier("trm", TRMSudokuWorker, "tiny", _POOL)]
    m.ladder = [Tier("trm", AnyCheckpointTRMMazeWorker, "tiny", _POOL)]
    return SkillRegistry([s, m])


def _cases(n: int) -> list[tuple[str, str, list[dict[str, Any]]]]:
    rng = random.Random(5)
    out: list[tuple[str, str, list[dict[str, Any]]]] = []
    sizes = served_sizes("sudoku.solve", "trm")
    if sizes:
        s = max(sizes)
        default = sudoku.DEFAULT_GIVENS[s]
        hard = max(0, default - {4: 1, 6: 4, 9: 6}[s])
        out.append((f"sudoku {s}x{s}, {default} givens", "sudoku.solve", [{"puzzle": sudoku.generate(s, rng)[0]} for _ in range(n)]))
        out.append((f"sudoku {s}x{s}, {hard} givens", "sudoku.solve", [{"puzzle": sudoku.generate(s, rng, hard)[0]} for _ in range(n)]))
    for side in available_sizes("maze.route", "trm"):
        out.append((f"maze {side}x{side}", "maze.route", [{"grid": maze.generate(side, rng)} for _ in range(n)]))
    return out


def run(quick: bool, *, tiny: bool = False) -> dict[str, Any]:
    n = 4 if tiny else (64 if quick else 200)
    ks = (1, 2) if tiny else PARTICLES
    cases = _cases(n)
    if not cases:
        return {"rows": [], "summary": "no TRM checkpoint is bundled; nothing to measure", "ok": False}
    policy = Policy(mode="tiny_only", ladders={"sudoku.solve": ["trm"], "maze.route": ["trm"]}, replans=0)

    async def go() -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        fleet = Fleet(planner=RulePlanner(), registry=_registry(), executor=LocalExecutor(), policy=policy)
        try:
            for label, skill, inputs in cases:
                for k in ks:
                    strat = Strategy(particles=k, select="vote")
                    plan = Plan(steps=[Step(id=f"p{j}", skill=skill, inputs=inp, strategy=strat) for j, inp in enumerate(inputs)],
                                output=[f"p{j}" for j in range(len(inputs))])
                    rep = await fleet.run(Task(goal=f"particles {label} k={k}"), plan=plan)
                    t = rep.totals
                    rows.append({"case": label, "particles": k, "steps": t.steps, "verified %": 100 * t.verified / t.steps,
                                 "worker s per step": t.worker_seconds / t.steps, "particles run": t.particles,
                                 "wall s": t.wall_s})
        finally:
            await fleet.close()
        return rows

    rows = asyncio.run(go())
    ok = True
    bits = []
    for label, _, _ in cases:
        mine = [r for r in rows if r["case"] == label]
        first, last = mine[0], mine[-1]
        ok &= last["verified %"] >= first["verified %"]
        cost = last["worker s per step"] / first["worker s per step"] if first["worker s per step"] else float("nan")
        bits.append(f"{label}: {first['verified %']:.1f}% -> {last['verified %']:.1f}% verified at "
                    f"{first['particles']} -> {last['particles']} particles ({cost:.1f}x worker s)")
    summary = f"{n} steps per case, TRM tier only, vote among verified particles: " + "; ".join(bits)
    if 9 not in served_sizes("sudoku.solve", "trm"):
        summary += "; 9x9 sudoku is not served, so the largest served size stands in"
    if unserved_note("sudoku.solve"):
        summary += f" ({unserved_note('sudoku.solve')})"
    if not available_sizes("maze.route", "trm"):
        summary += "; no maze checkpoint is bundled, so mazes are not measured"
    return {"rows": rows, "summary": summary + " (check: 8 particles at least as accurate as 1)", "ok": ok,
            "plot": {"kind": "line", "x": "particles", "group": "case", "y": ["verified %"], "title": "particles: TRM tier only"}}
