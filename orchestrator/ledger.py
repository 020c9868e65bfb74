"""Cost accounting: a price table for LLM calls and the run totals (cost per thought)."""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel, ConfigDict, Field

from .models import Cost, StepResult, Totals

__all__ = ["Price", "PriceTable", "totals"]


class Price(BaseModel):
    """Dollars per million tokens in and out, plus a fixed price per call."""

    model_config = ConfigDict(extra="forbid")
    per_mtok_in: float = Field(default=0.0, ge=0)
    per_mtok_out: float = Field(default=0.0, ge=0)
    per_call: float = Field(default=0.0, ge=0)

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return tokens_in * self.per_mtok_in / 1e6 + tokens_out * self.per_mtok_out / 1e6 + self.per_call


class PriceTable(BaseModel):
    """Prices by model name; ``default`` for models not listed."""

    model_config = ConfigDict(extra="forbid")
    models: dict[str, Price] = Field(default_factory=dict)
    default: Price = Field(default_factory=Price)

    def price(self, model: str) -> Price:
        return self.models.get(model, self.default)


def totals(results: list[StepResult], planner_cost: Cost, wall_s: float, planner_calls: int) -> Totals:
    """Add up a run: per-status counts, steps settled per tier, tokens, dollars, seconds."""
    per_tier = Counter(r.tier for r in results if r.settled and r.tier)
    step_cost = Cost()
    for r in results:
        if not r.resumed:
            step_cost = step_cost + r.cost
    all_cost = step_cost + planner_cost
    n = len(results)
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
        particles=step_cost.particles,
        resends=sum(r.resends for r in results),
        wall_s=round(wall_s, 4),
        cost_per_step_usd=round(all_cost.cost_usd / n, 8) if n else 0.0,
        worker_seconds_per_step=round(step_cost.worker_s / n, 6) if n else 0.0,
    )
