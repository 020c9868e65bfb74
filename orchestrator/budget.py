"""Run budgets: large-model calls, tokens, dollars, deadline. A tracker is consulted before
each large-model call and after each step; once a budget is spent the run stops dispatching
and ends ``partial``, naming the budget."""

from __future__ import annotations

import time

from tinyfleet_core.errors import BudgetExceeded
from tinyfleet_core.models import Budget, Cost

__all__ = ["BudgetTracker"]


class BudgetTracker:
    def __init__(self, budget: Budget, started: float | None = None) -> None:
        self.budget = budget
        self.started = time.monotonic() if started is None else started
        self.spent = Cost()
        self.exhausted: str | None = None

    def add(self, cost: Cost) -> None:
        self.spent = self.spent + cost
        b, s = self.budget, self.spent
        if self.exhausted is None:
            if b.max_large_calls is not None and s.large_calls > b.max_large_calls:
                self.exhausted = "max_large_calls"
            elif b.max_tokens is not None and s.tokens_in + s.tokens_out > b.max_tokens:
                self.exhausted = "max_tokens"
            elif b.max_cost_usd is not None and s.cost_usd > b.max_cost_usd:
                self.exhausted = "max_cost_usd"

    def before_large_call(self) -> None:
        """Raise BudgetExceeded when one more large-model call would break a budget."""
        b, s = self.budget, self.spent
        if b.max_large_calls is not None and s.large_calls + 1 > b.max_large_calls:
            self.exhausted = self.exhausted or "max_large_calls"
            raise BudgetExceeded(
                "max_large_calls", f"budget max_large_calls={b.max_large_calls} is spent; raise it to escalate further"
            )
        if b.max_tokens is not None and s.tokens_in + s.tokens_out >= b.max_tokens:
            self.exhausted = self.exhausted or "max_tokens"
            raise BudgetExceeded("max_tokens", f"budget max_tokens={b.max_tokens} is spent")
        if b.max_cost_usd is not None and s.cost_usd >= b.max_cost_usd:
            self.exhausted = self.exhausted or "max_cost_usd"
            raise BudgetExceeded("max_cost_usd", f"budget max_cost_usd={b.max_cost_usd} is spent")

    def time_left(self) -> float | None:
        if self.budget.deadline_s is None:
            return None
        return self.budget.deadline_s - (time.monotonic() - self.started)
