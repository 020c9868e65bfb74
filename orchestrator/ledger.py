"""Cost accounting: a price table for LLM calls and CPU time, the driver's CPU clock, and
the run totals (cost per thought)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from tinyfleet_core.models import Cost, StepResult, Totals
from tinyfleet_core.prices import CPU_CORE_HOUR_USD, Price, PriceTable  # noqa: F401  (moved; kept importable from here)

__all__ = ["Price", "PriceTable", "DriverClock", "totals", "CPU_CORE_HOUR_USD"]



@dataclass
class DriverClock:
    """CPU time of the driver's event-loop thread during one run (``time.thread_time``, so
    waiting on workers, Ray or an LLM's reply is not counted, and neither are worker
    threads of a local executor). Start it in the thread that runs the event loop.
    Verification run inline on that thread is added to ``inline_verify_s`` and subtracted,
    since it is counted as verifier seconds."""

    started: float = field(default_factory=time.thread_time)
    inline_verify_s: float = 0.0

    def driver_seconds(self) -> float:
        return max(0.0, time.thread_time() - self.started - self.inline_verify_s)


def totals(
    results: list[StepResult],
    planner_cost: Cost,
    wall_s: float,
    planner_calls: int,
    *,
    driver_s: float = 0.0,
    prices: PriceTable | None = None,
) -> Totals:
    """Add up a run: per-status counts, steps settled per tier, tokens, dollars, seconds.

    ``driver_s`` is the driver's CPU seconds (a :class:`DriverClock`'s reading); CPU seconds
    of workers, verifiers and the driver are priced at ``prices.cpu_core_hour_usd``."""
    per_tier = Counter(r.tier for r in results if r.settled and r.tier)
    step_cost = Cost()
    for r in results:
        if not r.resumed:
            step_cost = step_cost + r.cost
    all_cost = step_cost + planner_cost
    n = len(results)
    cpu_s = step_cost.worker_s + step_cost.verifier_s + driver_s
    cpu_usd = cpu_s / 3600.0 * (prices or PriceTable()).cpu_core_hour_usd
    total_usd = all_cost.cost_usd + cpu_usd
    return Totals(
        steps=n,
        verified=sum(r.status == "verified" for r in results),
        accepted=sum(r.status == "accepted" for r in results),
        failed=sum(r.status == "failed" for r in results),
        skipped=sum(r.status == "skipped" for r in results),
        resumed=sum(r.resumed for r in results),
        escalated=sum(r.escalated for r in results),
        per_tier=dict(sorted(per_tier.items())),
        large_model_calls=step_cost.large_calls,
        planner_calls=planner_calls,
        tokens_in=all_cost.tokens_in,
        tokens_out=all_cost.tokens_out,
        cost_usd=round(all_cost.cost_usd, 8),
        worker_seconds=round(step_cost.worker_s, 6),
        verifier_seconds=round(step_cost.verifier_s, 6),
        driver_seconds=round(driver_s, 6),
        cpu_seconds=round(cpu_s, 6),
        cpu_cost_usd=round(cpu_usd, 10),
        total_cost_usd=round(total_usd, 10),
        particles=step_cost.particles,
        resends=sum(r.resends for r in results),
        wall_s=round(wall_s, 4),
        cost_per_step_usd=round(total_usd / n, 10) if n else 0.0,
        worker_seconds_per_step=round(step_cost.worker_s / n, 6) if n else 0.0,
    )
