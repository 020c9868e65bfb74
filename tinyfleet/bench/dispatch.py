"""dispatch: items/s for (a) one Ray task per item, (b) one actor call per item, (c) a tinyfleet
pool with batching, and the fair, hand-batched baselines a Ray user would write: (d) plain Ray
actors running the same worker, handed the jobs in batches of the pool's max batch (256), and
(e) one Ray task per 256-item chunk; on a fixed-cost worker (a no-op, and a 5 ms step).

The pool and (d) get as many replicas as Ray has CPUs, the same parallel slots as (a) and (e),
whose tasks (one CPU each) spread over every CPU; (b) is one actor. Targets (all can fail):
(c) >= 5x (a)'s items/s on no-op steps, (c) more items/s than (a) on 5 ms steps, and (c) >= 1x
(d) at both step costs (the pool's batching costs no more than batching by hand). The
overhead column (wall time x slots / worker time - 1) is reported, not judged."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from orchestrator.executor import PoolSpec
from orchestrator.ray_executor import RayExecutor, ensure_ray
from tinyfleet_core.models import Attempt
from workers.base import Job, PoolOptions, Worker

__all__ = ["run", "FixedCostWorker", "NoopInput"]


class NoopInput(BaseModel):
    k: int
    cost_ms: float = 0.0


class FixedCostWorker(Worker):
    """Spends ``cost_ms`` per item (sleep, so cores are not the bottleneck), answers k."""

    name = "bench.fixed"
    skill = "bench.fixed"

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        out = []
        for j in jobs:
            inp = j.input
            assert isinstance(inp, NoopInput)
            if inp.cost_ms:
                time.sleep(inp.cost_ms / 1000)
            out.append(self.attempt({"k": inp.k}, 1.0, job=j, seconds=inp.cost_ms / 1000))
        return out


def _item(k: int, cost_ms: float) -> None:
    if cost_ms:
        time.sleep(cost_ms / 1000)


class _Actor:
    def call(self, k: int, cost_ms: float) -> int:
        if cost_ms:
            time.sleep(cost_ms / 1000)
        return k


def _ray_tasks(n: int, cost_ms: float) -> float:
    import ray

    f = ray.remote(num_cpus=1)(_item)
    ray.get([f.remote(0, 0.0) for _ in range(50)])  # warm the worker processes
    t0 = time.perf_counter()
    ray.get([f.remote(k, cost_ms) for k in range(n)])
    return time.perf_counter() - t0


def _actor_calls(n: int, cost_ms: float) -> float:
    import ray

    a = ray.remote(num_cpus=0)(_Actor).remote()
    ray.get([a.call.remote(0, 0.0) for _ in range(50)])
    t0 = time.perf_counter()
    ray.get([a.call.remote(k, cost_ms) for k in range(n)])
    dt = time.perf_counter() - t0
    ray.kill(a)
    return dt


CHUNK = 256


class _BatchActor:
    """A plain Ray actor running the benchmark's worker on the batches it is handed."""

    def __init__(self) -> None:
        self.worker = FixedCostWorker()

    def solve(self, ks: list[int], cost_ms: float) -> list[int]:
        got = self.worker.solve_batch([Job(NoopInput(k=k, cost_ms=cost_ms)) for k in ks])
        return [a.output["k"] for a in got]  # type: ignore[index]


def _chunk(ks: list[int], cost_ms: float) -> list[int]:
    got = FixedCostWorker().solve_batch([Job(NoopInput(k=k, cost_ms=cost_ms)) for k in ks])
    return [a.output["k"] for a in got]  # type: ignore[index]


def _chunks(n: int) -> list[list[int]]:
    return [list(range(i, min(n, i + CHUNK))) for i in range(0, n, CHUNK)]


def _hand_batched_actors(n: int, cost_ms: float, replicas: int) -> float:
    import ray

    actors = [ray.remote(num_cpus=0)(_BatchActor).remote() for _ in range(replicas)]
    ray.get([a.solve.remote([0], 0.0) for a in actors])
    t0 = time.perf_counter()
    out = ray.get([actors[i % replicas].solve.remote(ks, cost_ms) for i, ks in enumerate(_chunks(n))])
    dt = time.perf_counter() - t0
    assert [k for ks in out for k in ks] == list(range(n))
    for a in actors:
        ray.kill(a)
    return dt


def _chunked_tasks(n: int, cost_ms: float) -> float:
    import ray

    f = ray.remote(num_cpus=1)(_chunk)
    ray.get([f.remote([0], 0.0) for _ in range(8)])
    t0 = time.perf_counter()
    out = ray.get([f.remote(ks, cost_ms) for ks in _chunks(n)])
    dt = time.perf_counter() - t0
    assert [k for ks in out for k in ks] == list(range(n))
    return dt


async def _pools(ex: RayExecutor, pool: str, n: int, cost_ms: float) -> float:
    jobs = [Job(NoopInput(k=k, cost_ms=cost_ms)) for k in range(n)]
    await ex.submit_many(pool, [Job(NoopInput(k=0)) for _ in range(50)])
    t0 = time.perf_counter()
    got = await ex.submit_many(pool, jobs)  # the pool is handed every job at once, as (d) and (e) are
    dt = time.perf_counter() - t0
    assert [a.output["k"] for a in got] == list(range(n))  # type: ignore[union-attr,index]
    return dt


def run(quick: bool, *, tiny: bool = False) -> dict[str, Any]:
    import ray

    ensure_ray()
    ray_cpus = ray.cluster_resources().get("CPU", 1)
    replicas = max(1, int(ray_cpus))
    reps = 1 if tiny else 3
    n_noop = 200 if tiny else (2000 if quick else 5000)
    n_slow = 40 if tiny else (200 if quick else 600)
    rows: list[dict[str, Any]] = []

    async def pools_all() -> dict[tuple[float, int], list[float]]:
        ex = RayExecutor()
        await ex.ensure_pool(PoolSpec("bench", FixedCostWorker, PoolOptions(replicas=replicas, num_cpus=0, max_batch=256, max_wait_ms=1.0)))
        out: dict[tuple[float, int], list[float]] = {}
        try:
            for cost, n in ((0.0, n_noop), (5.0, n_slow)):
                out[(cost, n)] = [await _pools(ex, "bench", n, cost) for _ in range(reps)]
        finally:
            await ex.close()
        return out

    pool_times = asyncio.run(pools_all())
    summary_bits = []
    ok = True
    for cost, n in ((0.0, n_noop), (5.0, n_slow)):
        t_task = statistics.median(_ray_tasks(n, cost) for _ in range(reps))
        t_actor = statistics.median(_actor_calls(n, cost) for _ in range(reps))
        t_hand = statistics.median(_hand_batched_actors(n, cost, replicas) for _ in range(reps))
        t_chunk = statistics.median(_chunked_tasks(n, cost) for _ in range(reps))
        t_pool = statistics.median(pool_times[(cost, n)])
        label = "no-op" if cost == 0 else f"{cost:g} ms"
        # parallel slots: Ray tasks spread over every CPU; one actor; the pool's replicas
        slots = {"a": int(ray_cpus), "b": 1, "c": replicas, "d": replicas, "e": int(ray_cpus)}
        for key, name, t in (("a", "(a) Ray task per item", t_task), ("b", "(b) actor call per item", t_actor),
                             ("c", f"(c) tinyfleet pool ({replicas} replicas)", t_pool),
                             ("d", f"(d) hand-batched Ray actors ({replicas}, {CHUNK} per call)", t_hand),
                             ("e", f"(e) Ray task per {CHUNK}-item chunk", t_chunk)):
            row = {"step": label, "method": name, "items": n, "items/s": n / t, "vs (a)": t_task / t,
                   "pool vs this": t / t_pool}
            if cost:
                row["overhead vs worker time"] = t * slots[key] / (n * cost / 1000) - 1
            rows.append(row)
        ok &= t_hand / t_pool >= 1.0
        summary_bits.append(f"{label}: the pool at {t_hand / t_pool:.2f}x hand-batched actors and "
                            f"{t_chunk / t_pool:.2f}x chunked tasks (target >= 1x the actors)")
        if cost == 0:
            ratio = t_task / t_pool
            ok &= ratio >= 5
            summary_bits.append(f"no-op: pools {ratio:.1f}x Ray tasks (target >= 5x)")
        else:
            ratio = t_task / t_pool
            ok &= ratio > 1.0
            verdict = "beats" if ratio > 1.0 else "does NOT beat"
            summary_bits.append(f"5 ms: the pool {verdict} Ray tasks per item ({n / t_pool:,.0f} vs {n / t_task:,.0f} items/s, "
                                f"{ratio:.2f}x; target > 1x)")
    return {"rows": rows, "summary": "; ".join(summary_bits) + f" (median of {reps})", "ok": ok}
