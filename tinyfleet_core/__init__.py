"""The bottom layer of tinyfleet: the typed data that crosses every boundary (tasks, plans,
attempts, verdicts, reports, events), the one exception tree, and prices.

Nothing here imports another tinyfleet package, so every layer above (workers, planners, the
run loop, the CLI) can import it without a cycle. Users import these names from ``tinyfleet``.
"""

from __future__ import annotations

from tinyfleet_core.errors import (
    BudgetExceeded,
    ConfigError,
    EscalationFailed,
    InputError,
    PlanError,
    TinyfleetError,
    WorkerError,
    WorkerUnavailable,
)
from tinyfleet_core.models import (
    Attempt,
    Budget,
    Cost,
    Event,
    Plan,
    RunReport,
    Step,
    StepResult,
    Strategy,
    Task,
    Totals,
    Trial,
    Verdict,
)
from tinyfleet_core.prices import Price, PriceTable

__all__ = [
    "Attempt",
    "Budget",
    "Cost",
    "Event",
    "Plan",
    "RunReport",
    "Step",
    "StepResult",
    "Strategy",
    "Task",
    "Totals",
    "Trial",
    "Verdict",
    "Price",
    "PriceTable",
    "TinyfleetError",
    "ConfigError",
    "InputError",
    "PlanError",
    "BudgetExceeded",
    "WorkerError",
    "WorkerUnavailable",
    "EscalationFailed",
]
