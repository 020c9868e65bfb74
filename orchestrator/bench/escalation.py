"""escalation: one mixed workload (sudoku 4x4/6x6/9x9, mazes, forecasts) under three
policies, side by side: every step to the large model ("large only"), the tiny tiers only,
and the tinyfleet ladder (tiny tiers, verifier, then the large model).

The large model is the real ``OpenAIPlanner.solve`` path (the ``openai`` client over HTTP)
against :class:`BenchStubServer` (in its own process), a stub that answers every escalated step with the task
kit's exact solver (sudoku search, BFS; forecasts, which have no exact answer, get seasonal
naive with widening bands). It is not a model: it
stands in for a large model that is always right, which is the large-only baseline's best
case. Its token counts are estimates (characters / 4). Prices are stated, not measured:
``LARGE_PRICE`` per million tokens for the large model and ``CPU_USD_PER_CORE_HOUR`` for
the tiny tiers' worker seconds.

Target: the ladder makes >= 10x fewer large-model calls than "large only" with 100% of its
(verifiable) steps verified.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from planners.openai import OpenAIPlanner
from workers import maze, sudoku
from workers.builtin import default_registry

from ..escalation import Policy
from ..fleet import Fleet
from ..ledger import Price, PriceTable
from ..models import Plan, RunReport, Step, Task
from .checkpoints import served_sizes
from .stub_server import BenchStubServer, last_user_text

__all__ = ["run", "workload", "exact_answer", "LARGE_PRICE", "CPU_USD_PER_CORE_HOUR", "Item"]

LARGE_PRICE = Price(per_mtok_in=2.50, per_mtok_out=10.00)
"""Stated price of the large model: $2.50 / $10.00 per million tokens in / out (a GPT-4o-class
list price), applied to the stub's estimated token counts."""
CPU_USD_PER_CORE_HOUR = 0.05
"""Stated price of one CPU core-hour for the tiny tiers' worker seconds."""

_SUDOKU_MIX = ((4, 0.2), (6, 0.2), (9, 0.2))
_MAZE_SHARE = 0.2
_SERIES_SHARE = 0.2


@dataclass(frozen=True)
class Item:
    """One step of the workload: a category for the report, its skill and input."""

    category: str
    skill: str
    inputs: dict[str, Any]


def workload(n: int, seed: int, *, series: bool = True) -> list[Item]:
    """``n`` steps: 20% each of 4x4, 6x6 and 9x9 sudoku (default givens), 20% mazes (sides
    7/11/15/21; half perfect, half with 10% of inner walls knocked out, where a greedy path may
    not be the shortest), 20% forecasts (synthetic series, horizon 8-24). Without ``series``
    the forecast share goes to mazes."""
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    counts = {f"sudoku {s}x{s}": int(n * share) for s, share in _SUDOKU_MIX}
    counts["maze"] = int(n * (_MAZE_SHARE + (0 if series else _SERIES_SHARE)))
    if series:
        counts["forecast"] = int(n * _SERIES_SHARE)
    counts[next(iter(counts))] += n - sum(counts.values())
    items: list[Item] = []
    for cat, k in counts.items():
        for j in range(k):
            if cat.startswith("sudoku"):
                size = int(cat.split()[1].split("x")[0])
                items.append(Item(cat, "sudoku.solve", {"puzzle": sudoku.generate(size, rng)[0]}))
            elif cat == "maze":
                side = (7, 11, 15, 21)[j % 4]
                items.append(Item(cat, "maze.route", {"grid": maze.generate(side, rng, loops=0.1 if j % 2 else 0.0)}))
            else:
                items.append(Item(cat, "series.forecast", _forecast_input(nrng)))
    return items


def _forecast_input(nrng: np.random.Generator) -> dict[str, Any]:
    from workers.series import generate_series

    horizon = int(nrng.integers(8, 25))
    s = generate_series(nrng, int(nrng.integers(96, 200)), regular_tail=horizon)
    inp: dict[str, Any] = {"values": [float(v) for v in s.values], "horizon": horizon}
    if not np.allclose(np.diff(s.timestamps), 1.0):
        inp["timestamps"] = [float(t) for t in s.timestamps]
    if s.season > 1:
        inp["season"] = s.season
    return inp


def exact_answer(body: dict[str, Any]) -> str:
    """The stub's reply to an escalated step: the kit's exact answer as JSON. Raises
    ValueError for requests it cannot answer (the stub turns that into an HTTP 400)."""
    text = last_user_text(body)
    _, sep, payload = text.partition("input (JSON): ")
    if not sep:
        raise ValueError("not an escalated step (no 'input (JSON):' in the user message)")
    inp = json.loads(payload)
    if "puzzle" in inp:
        return json.dumps({"solution": sudoku.solve_exact(inp["puzzle"])})
    if "grid" in inp:
        return json.dumps({"path": [list(c) for c in maze.bfs_path(inp["grid"])]})
    if "values" in inp and "horizon" in inp:  # no exact answer exists: seasonal naive with widening bands
        from workers.series import Z90, effective_season, naive_scale, seasonal_naive

        x = np.asarray(inp["values"], dtype=float)
        h, season = int(inp["horizon"]), effective_season(inp.get("season"), x)
        m = seasonal_naive(x, h, season)
        band = Z90 * (naive_scale(x, season) or float(np.std(x)) or 1.0) * np.sqrt(np.arange(1, h + 1))
        return json.dumps({"mean": m.tolist(), "p10": (m - band).tolist(), "p90": (m + band).tolist()})
    raise ValueError(f"the stub has no exact answer for inputs with keys {sorted(inp)}")


def _ladders(registry: Any) -> dict[str, list[str]]:
    """Tier names to climb per skill (final tier excluded): the built-in ladders, less tiers
    whose pool could not start (a TRM tier whose checkpoints are all under the worker's bar,
    the LTC tier before its checkpoint is bundled)."""
    from workers.liquid import checkpoint_path

    out: dict[str, list[str]] = {}
    for name in ("sudoku.solve", "maze.route"):
        tiers = [t.name for t in registry.get(name).ladder]
        if "trm" in tiers and not served_sizes(name, "trm"):
            tiers.remove("trm")
        out[name] = tiers
    if "series.forecast" in registry:
        tiers = [t.name for t in registry.get("series.forecast").ladder]
        out["series.forecast"] = [t for t in tiers if t not in ("cfc", "ltc") or checkpoint_path("series.forecast", t).exists()]
    return out


def _row(name: str, rep: RunReport, items: list[Item]) -> dict[str, Any]:
    t = rep.totals
    n = len(items)
    tiny_s = sum(tr.attempt.cost.worker_s for r in rep.steps for tr in r.trials if tr.attempt.tier != "large")
    llm_usd = t.cost_usd
    cpu_usd = tiny_s / 3600 * CPU_USD_PER_CORE_HOUR
    tiers = Counter(r.tier for r in rep.steps if r.settled and r.tier)
    return {
        "policy": name,
        "steps": n,
        "verified %": 100.0 * t.verified / n,
        "failed": t.failed,
        "settled per tier": ", ".join(f"{k} {100 * v / n:.0f}%" for k, v in tiers.most_common()),
        "large-model calls": t.large_model_calls,
        "tokens": t.tokens_in + t.tokens_out,
        "tiny worker s": round(tiny_s, 3),
        "LLM $": round(llm_usd, 6),
        "cost per thought $": (llm_usd + cpu_usd) / n,
        "wall s": round(t.wall_s, 2),
    }


def _wrong(rep: RunReport, items: list[Item]) -> int:
    """Verified puzzle answers that differ from the kit's own ground truth (should be 0)."""
    bad = 0
    for r, it in zip(rep.steps, items, strict=True):
        if r.status != "verified" or r.output is None:
            continue
        if it.skill == "sudoku.solve" and r.output["solution"] != sudoku.solve_exact(it.inputs["puzzle"]):
            bad += 1
        if it.skill == "maze.route" and len(r.output["path"]) != len(maze.bfs_path(it.inputs["grid"])):
            bad += 1
    return bad


def run(quick: bool, *, tiny: bool = False) -> dict[str, Any]:
    n = 25 if tiny else 500  # the target needs >= 500 steps, so --quick runs the full workload too
    registry = default_registry()
    series = "series.forecast" in registry
    items = workload(n, seed=9, series=series)
    plan = Plan(steps=[Step(id=f"s{k}", skill=it.skill, inputs=it.inputs) for k, it in enumerate(items)], output=[f"s{k}" for k in range(n)])
    task = Task(goal="escalation benchmark: mixed workload")
    ladders = _ladders(registry)
    policies = [
        ("large only", Policy(mode="final_only", final="large", replans=0)),
        ("tiny tiers only", Policy(mode="tiny_only", ladders=ladders, replans=0)),
        ("tinyfleet ladder", Policy(mode="ladder", ladders=ladders, replans=0)),
    ]

    async def go() -> list[RunReport]:
        with BenchStubServer(exact_answer, process=True) as stub:
            planner = OpenAIPlanner(stub.settings(timeout_s=120.0), prices=PriceTable(default=LARGE_PRICE))
            fleet = Fleet(planner=planner, registry=registry, executor="local")
            try:
                reps = [await fleet.run(task, plan=plan, policy=p) for _, p in policies]
            finally:
                await fleet.close()
                await planner.aclose()
            return reps

    reports = asyncio.run(go())
    rows = [_row(name, rep, items) for (name, _), rep in zip(policies, reports, strict=True)]
    large, _, ladder = reports
    wrong = sum(_wrong(r, items) for r in reports)
    calls_l, calls_t = large.totals.large_model_calls, ladder.totals.large_model_calls
    ratio = calls_l / calls_t if calls_t else float("inf")
    all_verified = ladder.totals.verified == n
    ok = ratio >= 10 and all_verified and wrong == 0
    cats = Counter(it.category for it in items)
    per_cat = Counter(it.category for it, r in zip(items, ladder.steps, strict=True) if r.tier == "large")
    esc = ", ".join(f"{c} {per_cat.get(c, 0)}/{k}" for c, k in cats.items())
    ratio_txt = f"{ratio:.1f}x fewer" if calls_t else "none at all"
    cost_l, cost_t = rows[0]["cost per thought $"], rows[2]["cost per thought $"]
    cheaper = f"{cost_l / cost_t:.1f}x" if cost_t else "infinitely"
    summary = (
        f"{n} steps; ladder: {calls_t} large-model calls vs {calls_l} for large only ({ratio_txt}; target >= 10x fewer), "
        f"{100 * ladder.totals.verified / n:.1f}% verified (target 100%), cost per thought {cheaper} lower; tiny tiers alone verify "
        f"{100 * reports[1].totals.verified / n:.1f}%. Escalated to the large model per category: {esc}. "
        f"Verified answers wrong against the kits' ground truth: {wrong}. Large model = OpenAIPlanner over HTTP "
        f"to an exact-solver stub (its own process); prices stated: ${LARGE_PRICE.per_mtok_in}/"
        f"${LARGE_PRICE.per_mtok_out} per Mtok in/out (tokens estimated as chars/4), ${CPU_USD_PER_CORE_HOUR}/core-hour."
    )
    return {
        "rows": rows,
        "summary": summary,
        "ok": ok,
        "plot": {"kind": "bar", "x": "policy", "y": ["large-model calls", "verified %"], "logy": True,
                 "title": f"escalation: {n} mixed steps"},
    }
