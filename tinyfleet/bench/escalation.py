"""escalation: one mixed workload (sudoku 4x4/6x6/9x9, mazes 7-21, forecasts), one run, four
policies side by side, named as a user would pick them:

- ``large_only``: every step to the large model.
- ``exact_only``: every step to the skill's offline last tier: the exact solver for sudoku
  (search) and mazes (BFS). ``series.forecast`` has no exact solver: this row uses its
  classical Holt-Winters tier there (named ``classical`` in the tiers column), so for
  forecasts the row is "classical only", not exact.
- ``tiny_only``: the tiny tiers of each ladder (TRM/HRM, heuristics, CfC/LTC), nothing after.
- ``fleet``: the tinyfleet ladder: tiny tiers, verifier, then the large model.

The large model is the simulated LLM of :mod:`.simulated_llm` (stated, sourced latency,
throughput, prices and per-skill error rates; its parameters are in the result's
``simulated_model``), reached over the real ``OpenAIPlanner.solve`` path (the ``openai``
client over HTTP to a server in its own process). Its wrong answers go through the same
verifiers as every tier's, so a wrong large answer fails its step.

Each row: ``verified_share``, ``large_calls``, ``tokens_in``/``tokens_out``, ``llm_usd``,
``cpu_seconds`` (``worker_seconds`` + ``verifier_seconds`` + ``driver_seconds`` of the run's
totals, less the seconds the large model's ``solve`` calls waited on HTTP, which are in
``worker_seconds`` but are not our CPU), a forecast sent to the large model costs two calls
(its answer, and its forecast of the cut history that the verifier scores),
``cpu_usd`` at ``CPU_USD_PER_CORE_HOUR``, ``cost_usd`` = both, ``wall_s``.

Target (can fail): ``fleet`` costs less than ``large_only`` in dollars at a verified share at
least every other row's (``large_only``, ``exact_only``, ``tiny_only``), and no verified answer is wrong against the kits' ground truth. Where
``exact_only`` simply wins (cheaper, faster and always right on sudoku and mazes) the summary
and the per-category table say so; that is not a target.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from orchestrator.escalation import Policy
from orchestrator.fleet import Fleet
from orchestrator.ledger import CPU_CORE_HOUR_USD
from planners.openai import OpenAIPlanner
from tinyfleet.bench.checkpoints import served_sizes
from tinyfleet.bench.simulated_llm import GPT4O_CLASS, SimConfig, step_input
from tinyfleet.bench.stub_server import BenchStubServer
from tinyfleet_core.models import Plan, RunReport, Step, Task
from tinyfleet_core.prices import Price, PriceTable
from workers.builtin import default_registry
from workers.kits import maze, sudoku

__all__ = ["run", "workload", "exact_answer", "prices", "CPU_USD_PER_CORE_HOUR", "Item", "ROWS", "SEED"]

CPU_USD_PER_CORE_HOUR: float = CPU_CORE_HOUR_USD
"""Price of one CPU core-hour for worker, verifier and driver seconds: the ledger's stated
default (AWS EC2 on-demand c7i.large, $0.08925/h for 2 vCPUs)."""
ROWS = ("large_only", "exact_only", "tiny_only", "fleet")
SEED = 9

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
    from workers.kits.series import generate_series

    horizon = int(nrng.integers(8, 25))
    s = generate_series(nrng, int(nrng.integers(96, 200)), regular_tail=horizon)
    inp: dict[str, Any] = {"values": [float(v) for v in s.values], "horizon": horizon}
    if not np.allclose(np.diff(s.timestamps), 1.0):
        inp["timestamps"] = [float(t) for t in s.timestamps]
    if s.season > 1:
        inp["season"] = s.season
    return inp


def exact_answer(body: dict[str, Any]) -> str:
    """The simulated model's *right* reply to an escalated step: the kit's exact answer as JSON
    (the server then makes it wrong at the stated rates). Raises
    ValueError for requests it cannot answer (the stub turns that into an HTTP 400)."""
    inp = step_input(body)  # the same reading as the simulated model's (the first user message)
    if inp is None:
        raise ValueError("not an escalated step (no 'input (JSON):' in the user message)")
    if "puzzle" in inp:
        return json.dumps({"solution": sudoku.solve_exact(inp["puzzle"])})
    if "grid" in inp:
        return json.dumps({"path": [list(c) for c in maze.bfs_path(inp["grid"])]})
    if "values" in inp and "horizon" in inp:  # no exact answer exists: seasonal naive with widening bands
        from workers.kits.series import Z90, effective_season, naive_scale, seasonal_naive

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
    from workers.serving.liquid import checkpoint_path

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


def _times(a: float, b: float) -> str:
    return f"{a / b:,.1f}x" if b else "infinitely"


def prices(sim: SimConfig) -> PriceTable:
    """The client-side price table for the simulated models (the planner prices usage with it)."""
    table = {p.name: Price(per_mtok_in=p.usd_per_mtok_in, per_mtok_out=p.usd_per_mtok_out) for p in sim.profiles}
    return PriceTable(models=table, default=table[sim.profiles[0].name])


def _cpu_s(rep: RunReport) -> tuple[float, float, float]:
    """(worker s, verifier s, driver s) of a run (the large model's HTTP waits are not in the
    worker seconds: the planner reports them as ``info["wait_s"]``)."""
    t = rep.totals
    return t.worker_seconds, t.verifier_seconds, t.driver_seconds


def _row(name: str, rep: RunReport) -> dict[str, Any]:
    t = rep.totals
    n = max(1, t.steps)
    tiny, ver, drv = _cpu_s(rep)
    cpu = tiny + ver + drv
    cpu_usd = cpu / 3600 * CPU_USD_PER_CORE_HOUR
    tiers = Counter(r.tier for r in rep.steps if r.settled and r.tier)
    return {
        "name": name,
        "steps": t.steps,
        "verified_share": round(t.verified / n, 4),
        "accepted_share": round(t.accepted / n, 4),
        "failed": t.failed,
        "large_calls": t.large_model_calls,
        "tokens_in": t.tokens_in,
        "tokens_out": t.tokens_out,
        "llm_usd": round(t.cost_usd, 6),
        "cpu_seconds": round(cpu, 3),
        "worker_cpu_s": round(tiny, 3),
        "verifier_s": round(ver, 3),
        "driver_s": round(drv, 3),
        "cpu_usd": round(cpu_usd, 8),
        "cost_usd": round(t.cost_usd + cpu_usd, 6),
        "wall_s": round(t.wall_s, 2),
        "settled per tier": ", ".join(f"{k} {100 * v / n:.0f}%" for k, v in tiers.most_common()),
    }


def _ratios(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """fleet / baseline for cost, CPU, wall time and large calls; verified share side by side."""
    f = rows["fleet"]
    out = []
    for name in ("large_only", "exact_only", "tiny_only"):
        b = rows[name]

        def ratio(key: str, b: dict[str, Any] = b) -> float | None:
            return round(f[key] / b[key], 4) if b[key] else None

        out.append({
            "fleet vs": name,
            "verified_share (fleet / baseline)": f"{f['verified_share']:.3f} / {b['verified_share']:.3f}",
            "cost_usd ratio": ratio("cost_usd"),
            "cpu_seconds ratio": ratio("cpu_seconds"),
            "wall_s ratio": ratio("wall_s"),
            "large_calls ratio": ratio("large_calls"),
        })
    return out


def _per_category(reports: dict[str, RunReport], items: list[Item]) -> list[dict[str, Any]]:
    """Per category and policy: verified share, large calls, dollars per step (LLM + CPU of the
    step's own attempts and verifications; driver seconds are run-wide and not split here)."""
    out = []
    for cat in dict.fromkeys(it.category for it in items):
        idx = [k for k, it in enumerate(items) if it.category == cat]
        for name, rep in reports.items():
            steps = [rep.steps[k] for k in idx]
            cpu = sum(r.cost.worker_s + r.cost.verifier_s for r in steps)
            usd = sum(r.cost.cost_usd for r in steps) + cpu / 3600 * CPU_USD_PER_CORE_HOUR
            out.append({
                "category": cat, "name": name, "steps": len(idx),
                "verified_share": round(sum(r.status == "verified" for r in steps) / len(idx), 4),
                "large_calls": sum(r.cost.large_calls for r in steps),
                "usd_per_step": usd / len(idx),
                "cpu_ms_per_step": 1000 * cpu / len(idx),
            })
    return out


def run(quick: bool, *, tiny: bool = False, sim: SimConfig | None = None) -> dict[str, Any]:
    n = 25 if tiny else (200 if quick else 500)
    sim = sim or SimConfig(seed=SEED)
    registry = default_registry()
    series = "series.forecast" in registry
    items = workload(n, seed=SEED, series=series)
    plan = Plan(steps=[Step(id=f"s{k}", skill=it.skill, inputs=it.inputs) for k, it in enumerate(items)], output=[f"s{k}" for k in range(n)])
    task = Task(goal="escalation benchmark: mixed workload")
    ladders = _ladders(registry)
    policies = {
        "large_only": Policy(mode="final_only", final="large", replans=0),
        "exact_only": Policy(mode="final_only", final="fallback", replans=0),
        "tiny_only": Policy(mode="tiny_only", ladders=ladders, replans=0),
        "fleet": Policy(mode="ladder", ladders=ladders, replans=0),
    }

    async def go() -> dict[str, RunReport]:
        with BenchStubServer(exact_answer, process=True, sim=sim) as stub:
            planner = OpenAIPlanner(stub.settings(timeout_s=900.0), prices=prices(sim))
            fleet = Fleet(planner=planner, registry=registry, executor="local")
            out: dict[str, RunReport] = {}
            try:
                for name, p in policies.items():
                    out[name] = await fleet.run(task, plan=plan, policy=p)
                return out
            finally:
                await fleet.close()
                await planner.aclose()

    reports = asyncio.run(go())
    rows = {name: _row(name, rep) for name, rep in reports.items()}
    wrong = {name: _wrong(rep, items) for name, rep in reports.items()}
    f, lo, ex = rows["fleet"], rows["large_only"], rows["exact_only"]
    # against every other row, not only large_only: the simulated model's wrong answers are fixed per
    # input, so the fleet (which escalates a subset) nearly always beats large_only; exact_only and
    # tiny_only can out-verify it
    best_other = max(rows[n]["verified_share"] for n in ROWS if n != "fleet")
    ok = f["cost_usd"] < lo["cost_usd"] and f["verified_share"] >= best_other and sum(wrong.values()) == 0
    cats = _per_category(reports, items)
    exact_wins = [
        c["category"] for c in cats if c["name"] == "exact_only" and not c["category"].startswith("forecast")
        and c["verified_share"] >= next(d for d in cats if d["name"] == "fleet" and d["category"] == c["category"])["verified_share"]
        and c["usd_per_step"] <= next(d for d in cats if d["name"] == "fleet" and d["category"] == c["category"])["usd_per_step"]
    ]

    def pct(r: dict[str, Any]) -> str:
        return f"{100 * r['verified_share']:.1f}%"

    summary = (
        f"{n} mixed steps, one run per policy, large model = simulated {GPT4O_CLASS.name} "
        f"({sim.profiles[0].ttft_s:g} s to first token, {sim.profiles[0].tokens_per_s:g} tok/s, "
        f"${sim.profiles[0].usd_per_mtok_in:g}/${sim.profiles[0].usd_per_mtok_out:g} per Mtok, error rates per skill stated). "
        f"Verified: large_only {pct(lo)}, exact_only {pct(ex)}, tiny_only {pct(rows['tiny_only'])}, fleet {pct(f)}. "
        f"Cost: fleet ${f['cost_usd']:.4f} vs large_only ${lo['cost_usd']:.4f} "
        f"({_times(lo['cost_usd'], f['cost_usd'])} cheaper) vs exact_only ${ex['cost_usd']:.6f}; "
        f"large calls {f['large_calls']} vs {lo['large_calls']}; wall {f['wall_s']:.1f} s vs {lo['wall_s']:.1f} s vs {ex['wall_s']:.1f} s; "
        f"CPU {f['cpu_seconds']:.2f} s vs {lo['cpu_seconds']:.2f} s vs {ex['cpu_seconds']:.2f} s. "
        f"Target: fleet cheaper than large_only at a verified share >= every other row's, 0 wrong verified answers "
        f"(wrong: {sum(wrong.values())}). exact_only is as right and cheaper than the fleet on: "
        f"{', '.join(exact_wins) or 'none'} (forecasts have no exact solver: exact_only uses the classical tier there)."
    )
    return {
        "rows": [rows[name] for name in ROWS],
        "summary": summary,
        "ok": ok,
        "simulated_model": sim.describe(),
        "cpu_usd_per_core_hour": CPU_USD_PER_CORE_HOUR,
        "tables": {"fleet vs each baseline": _ratios(rows), "per category": cats},
        "wrong_verified": wrong,
        "plot": {"kind": "bar", "x": "name", "y": ["cost_usd", "verified_share"], "logy": True,
                 "title": f"escalation: {n} mixed steps, four policies"},
    }
