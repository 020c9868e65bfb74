"""serving: per served TRM/HRM checkpoint, items/s of its pool (the product worker behind the
real LocalExecutor, handed every item at once, ``max_batch`` 256) against the ideal, the bare
model at the best batch its model card measured (``workers.training.tune_serving``), on the
same held-out items, interleaved in one process (rounds until the ideal has run a CPU budget:
more rounds for a fast checkpoint), each ratio the median of the rounds' side-by-side ratios.

Both sides are measured as items per CPU-second of this process (``time.process_time``: the
pool's batcher, Attempt building and the worker thread all count) and as wall items/s; the
machine is shared, so the CPU ratio is the one judged and the wall ratio is reported beside it.
A third measurement runs the same pool with the card's serving batch ignored (one forward pass
per handed batch, the behaviour before cards carried ``"serving"``): what the chunking buys.
Target: every pool at >= 80% of its ideal (items per CPU-second).
"""

from __future__ import annotations

import asyncio
import functools
import statistics
import time
from typing import Any

from orchestrator.executor import LocalExecutor, PoolSpec
from tinyfleet_core.models import Attempt
from workers.base import Job, PoolOptions
from workers.kits import maze, sudoku
from workers.serving.catalog import checkpoint_path, served_sizes
from workers.serving.serving_tune import ServingProfile

__all__ = ["run", "TARGET"]

TARGET = 0.8
_POOL = PoolOptions(replicas=1, num_cpus=1.0, max_batch=256, max_wait_ms=5.0)  # the tiny tiers' pool (workers.builtin)


def _served() -> list[tuple[str, str, int]]:
    return [(skill, model, size) for skill in ("sudoku.solve", "maze.route") for model in ("trm", "hrm")
            for size in served_sizes(skill, model)]


def _worker_class(skill: str, model: str) -> Any:
    from workers.serving import neural

    return {("sudoku.solve", "trm"): neural.TRMSudokuWorker, ("sudoku.solve", "hrm"): neural.HRMSudokuWorker,
            ("maze.route", "trm"): neural.TRMMazeWorker, ("maze.route", "hrm"): neural.HRMMazeWorker}[(skill, model)]


def _jobs(skill: str, items: list[Any]) -> list[Job]:
    if skill == "sudoku.solve":
        return [Job(sudoku.SudokuInput(puzzle=p), key=f"s{k}") for k, (p, _) in enumerate(items)]
    return [Job(maze.MazeInput(grid=g), key=f"m{k}") for k, g in enumerate(items)]


def _right(skill: str, items: list[Any], got: list[Attempt | BaseException]) -> float:
    ok = 0
    for item, a in zip(items, got, strict=True):
        if isinstance(a, BaseException) or a.output is None:
            continue
        if skill == "sudoku.solve":
            ok += sudoku.check_solution(item[0], a.output["solution"]) is None
        else:
            ok += maze.check_path(item, a.output["path"]) is None
    return ok / len(items)


async def _pool_pass(ex: LocalExecutor, name: str, jobs: list[Job]) -> tuple[float, float, list[Attempt | BaseException]]:
    """(CPU seconds of this process, wall seconds, attempts) for the pool to answer ``jobs``."""
    c0, w0 = time.process_time(), time.perf_counter()
    got = await ex.submit_many(name, jobs)
    return time.process_time() - c0, time.perf_counter() - w0, got


async def _one(skill: str, model: str, size: int, n: int, reps: tuple[int, int], budget_s: float) -> dict[str, Any]:
    """One checkpoint: the ideal and both pools over the same items, interleaved, for at least
    ``reps[0]`` and at most ``reps[1]`` rounds, until the ideal has run ``budget_s`` CPU seconds
    (a fast checkpoint gets more rounds, so its short passes are not one scheduler hiccup)."""
    import torch

    from workers.training.tune_serving import Served

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    path = checkpoint_path(skill, model, size)
    served = Served(path, n, seed=1, split="bench-serving")  # held out: not the tuner's split
    prof = ServingProfile.from_card(served.card, f"model card {path.with_suffix('.json')}")
    best = prof.best_batch if prof else 256
    jobs = _jobs(skill, served.items)
    cls = _worker_class(skill, model)
    ex = LocalExecutor()
    await ex.ensure_pool(PoolSpec("chunked", cls, _POOL))
    await ex.ensure_pool(PoolSpec("unchunked", functools.partial(cls, use_serving=False), _POOL))
    t: dict[str, list[tuple[float, float]]] = {"ideal": [], "chunked": [], "unchunked": []}
    right: dict[str, float] = {}
    try:
        served.run(best)  # warm up
        for name in ("chunked", "unchunked"):
            await ex.submit_many(name, jobs[:32])
        while len(t["ideal"]) < reps[0] or (len(t["ideal"]) < reps[1] and sum(c for c, _ in t["ideal"]) < budget_s):
            w0 = time.perf_counter()
            cpu = served.run(best)
            t["ideal"].append((cpu, time.perf_counter() - w0))
            for name in ("chunked", "unchunked"):
                cpu, wall, got = await _pool_pass(ex, name, jobs)
                t[name].append((cpu, wall))
                right[name] = _right(skill, served.items, got)
    finally:
        await ex.close()
        torch.set_num_threads(threads)
    med = {k: (statistics.median(c for c, _ in v), statistics.median(w for _, w in v)) for k, v in t.items()}

    def paired(name: str, i: int) -> float:  # median over rounds of ideal / pool, each round's side by side
        return statistics.median(a[i] / b[i] for a, b in zip(t["ideal"], t[name], strict=True))

    return {"checkpoint": path.stem, "best batch": best if prof else "none (256)", "items": served.n,
            "ideal items/CPU-s": served.n / med["ideal"][0], "ideal items/s": served.n / med["ideal"][1],
            "pool items/CPU-s": served.n / med["chunked"][0], "pool items/s": served.n / med["chunked"][1],
            "pool vs ideal (CPU)": paired("chunked", 0), "pool vs ideal (wall)": paired("chunked", 1),
            "unchunked pool vs ideal (CPU)": paired("unchunked", 0), "rounds": len(t["ideal"]),
            "pool exact %": 100 * right["chunked"], "unchunked exact %": 100 * right["unchunked"]}


def run(quick: bool, *, tiny: bool = False) -> dict[str, Any]:
    todo = _served()
    if tiny:
        todo = [c for c in todo if c[0] == "sudoku.solve"][:1]
    if not todo:
        return {"rows": [], "summary": "no served TRM/HRM checkpoint is bundled; nothing to measure", "ok": False}
    n = 16 if tiny else (256 if quick else 512)
    reps, budget = ((1, 1), 0.0) if tiny else (((3, 9), 2.0) if quick else ((5, 15), 6.0))
    rows = [asyncio.run(_one(skill, model, size, n, reps, budget)) for skill, model, size in todo]
    worst = min(rows, key=lambda r: r["pool vs ideal (CPU)"])
    ok = all(r["pool vs ideal (CPU)"] >= TARGET for r in rows)
    bits = ", ".join(f"{r['checkpoint']} {r['pool vs ideal (CPU)']:.2f}x (wall {r['pool vs ideal (wall)']:.2f}x, "
                     f"unchunked {r['unchunked pool vs ideal (CPU)']:.2f}x)" for r in rows)
    summary = (f"pool (LocalExecutor, max_batch 256, every item in flight) vs the bare model at its card's best batch, "
               f"items per CPU-second, median over {reps[0]}-{reps[1]} interleaved rounds of each round's ratio: {bits}; worst {worst['checkpoint']} at "
               f"{worst['pool vs ideal (CPU)']:.2f}x (target >= {TARGET:.0%} of the ideal for every checkpoint)")
    return {"rows": rows, "summary": summary, "ok": ok,
            "plot": {"kind": "bar", "x": "checkpoint", "y": ["pool vs ideal (CPU)", "unchunked pool vs ideal (CPU)"],
                     "title": "serving: pool / ideal, items per CPU-second"}}
