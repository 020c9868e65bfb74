"""scale: runs of 1,000, 10,000 and 100,000 no-op steps on the Ray executor, each size in a
fresh process (so a peak never carries over to the next size).

A step is one item of a batch task on the ``bench.noop`` skill: one tier whose worker echoes
its input on a Ray actor (kept on Ray: ``auto_inline=False``, so every batch is a Ray call),
checked by an inline verifier. Each run writes a journal. Per size: the driver's CPU seconds
per step (``Totals.driver_seconds``: the event-loop thread's CPU time, so waiting on Ray is not
counted), wall seconds per step, the peak RSS of the driver process
(``resource.getrusage``: its high-water mark, Ray's in-process core worker included) and its
RSS before the run (Ray started, the pool up), the bytes of the whole report as ``run --json``
prints it (read back from the journal) and of the journal file, and the most Ray calls one
pool had in flight (:meth:`~orchestrator.ray_executor.RayExecutor.pool_load`).

Targets (issue 18; both can fail): 100,000 steps under 2 GiB of peak driver RSS, and driver
seconds per step at the largest size within 1.5x of those at the smallest."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from orchestrator.fleet import Fleet
from orchestrator.journal import write_report_json
from orchestrator.ray_executor import RayExecutor
from tinyfleet_core.models import Attempt, Task
from workers.base import Job, PoolOptions, Skill, Tier, Worker
from workers.custom import define_skill

__all__ = ["run", "measure", "noop_skill", "NoopWorker"]

SIZES = (1_000, 10_000, 100_000)
RSS_TARGET = 2 * 1024**3
FLAT_TARGET = 1.5


class Item(BaseModel):
    k: int


class Echo(BaseModel):
    k: int


class NoopWorker(Worker):
    """Answers each item with its own ``k`` (no work: what is left is the fleet's overhead)."""

    name = "bench.noop"
    skill = "bench.noop"

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        return [self.attempt({"k": j.input.k}, 1.0, job=j) for j in jobs]  # type: ignore[attr-defined]


def noop_skill() -> Skill:
    """``bench.noop``: one tier on Ray actors (never moved into the driver), verified inline."""
    pool = PoolOptions(replicas=2, num_cpus=0, max_batch=256, max_wait_ms=1.0, auto_inline=False)
    return define_skill(
        "bench.noop", "Echo k (a no-op step for scale runs).", Item, Echo,
        ladder=[Tier("noop", NoopWorker, "tiny", pool)],
        verifier=lambda x, ans: (ans.k == x.k, f"{ans.k} != {x.k}"),
    )


def _rss_bytes() -> int:
    """This process's current RSS (Linux /proc; 0 where that is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024)


class _Count:
    """A text sink that counts the UTF-8 bytes written to it."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, text: str) -> int:
        self.bytes += len(text.encode())
        return len(text)


def measure(n: int, workdir: Path) -> dict[str, Any]:
    """One run of ``n`` no-op steps on a local Ray started here; the numbers of one row."""
    ex = RayExecutor(address="local")
    fleet = Fleet(executor=ex)
    fleet.add_skill(noop_skill())
    journal = workdir / f"scale-{n}.sqlite"

    async def go() -> dict[str, Any]:
        warm = await fleet.run(Task(id="warm", skill="bench.noop", inputs={"items": [{"k": 0}]}))  # Ray and the pool up
        assert warm.status == "succeeded", warm.error
        rss_before = _rss_bytes()
        task = Task(id=f"scale-{n}", skill="bench.noop", inputs={"items": [{"k": k} for k in range(n)]})
        t0 = time.perf_counter()
        report = await fleet.run(task, journal=journal)
        wall = time.perf_counter() - t0
        peak = _peak_rss_bytes()
        load = ex.pool_load(NoopWorker.name)
        await fleet.close()
        return {"report": report, "wall": wall, "rss_before": rss_before, "peak": peak, "load": load}

    got = asyncio.run(go())
    report = got["report"]
    ok = report.status == "succeeded" and report.output == [{"k": k} for k in range(n)]
    sink = _Count()
    write_report_json(report, sink)  # what run --json prints: every step whole, read back from the journal
    t = report.totals
    return {
        "steps": n,
        "driver s/step": t.driver_seconds / n,
        "wall s/step": got["wall"] / n,
        "peak RSS MiB": got["peak"] / 2**20,
        "RSS before MiB": got["rss_before"] / 2**20,
        "report bytes": sink.bytes,
        "steps with trials in memory": sum(bool(r.trials) for r in report.steps),
        "journal bytes": journal.stat().st_size,
        "peak Ray calls in flight": got["load"].peak_in_flight,
        "in-flight bound": got["load"].bound,
        "all verified": ok and t.verified == n,
    }


def _child(n: int, workdir: Path) -> dict[str, Any]:
    """``measure(n)`` in a fresh Python process (its own Ray, its own peak RSS)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TINYFLEET_", "RAY_ADDRESS"))}
    env.update(OMP_NUM_THREADS="1", RAY_DEDUP_LOGS="0")
    cmd = [sys.executable, "-m", "tinyfleet.bench.scale", "--steps", str(n), "--dir", str(workdir)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"scale run of {n} steps failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool, *, tiny: bool = False) -> dict[str, Any]:
    """The three sizes (``quick``: 1,000 and 10,000; ``tiny``: 50 and 500, for the tests), each
    in a fresh process. ``ok`` judges the targets only when 100,000 steps ran."""
    sizes = (50, 500) if tiny else (SIZES[:2] if quick else SIZES)
    with tempfile.TemporaryDirectory(prefix="tinyfleet-scale-") as d:
        rows = [_child(n, Path(d)) for n in sizes]
    small, large = rows[0], rows[-1]
    ratio = large["driver s/step"] / small["driver s/step"] if small["driver s/step"] else float("inf")
    peak = large["peak RSS MiB"] * 2**20
    verified = all(r["all verified"] for r in rows)
    bounded = all(r["peak Ray calls in flight"] <= r["in-flight bound"] for r in rows)
    ok = ratio <= FLAT_TARGET and peak < RSS_TARGET and verified and bounded if large["steps"] == SIZES[-1] else None
    summary = (
        f"{large['steps']:,} no-op steps on Ray: driver {large['driver s/step'] * 1e3:.3f} ms/step, {ratio:.2f}x that at "
        f"{small['steps']:,} (target <= {FLAT_TARGET}x); peak driver RSS {large['peak RSS MiB']:,.0f} MiB (target < 2,048 "
        f"MiB at 100,000); report {large['report bytes'] / 2**20:,.1f} MiB, journal {large['journal bytes'] / 2**20:,.1f} MiB; "
        f"at most {max(r['peak Ray calls in flight'] for r in rows)} Ray calls in flight (bound {large['in-flight bound']})"
    )
    return {"rows": rows, "summary": summary, "ok": ok}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tinyfleet.bench.scale", description="one scale run (a row of bench scale)")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--dir", default=".")
    args = p.parse_args(argv)
    print(json.dumps(measure(args.steps, Path(args.dir))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
