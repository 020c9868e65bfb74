"""tinyfleet's SDK core: typed tasks and plans, the run loop, executors, escalation, budgets,
journal and events. Everything public is re-exported here.

    from orchestrator import Fleet, Task
    report = Fleet().run_sync(Task(skill="sudoku.solve", inputs={"puzzle": grid}))

Names are resolved lazily (PEP 562), so ``workers`` can import ``orchestrator.models`` and
``orchestrator.errors`` without pulling in the run loop (which imports ``workers``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    BudgetExceeded,
    ConfigError,
    EscalationFailed,
    InputError,
    PlanError,
    TinyfleetError,
    WorkerError,
    WorkerUnavailable,
)
from .models import (
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

if TYPE_CHECKING:
    from .budget import BudgetTracker
    from .escalation import LARGE, Policy
    from .executor import Executor, LocalExecutor, PoolSpec
    from .fleet import Fleet
    from .journal import Journal
    from .ledger import Price, PriceTable
    from .plan_check import validate_plan
    from .ray_executor import RayExecutor
    from .config import FleetConfig
    from .tracing import OpenTelemetryHook, StepSpans

_LAZY = {
    "Fleet": ".fleet",
    "Policy": ".escalation",
    "LARGE": ".escalation",
    "Executor": ".executor",
    "LocalExecutor": ".executor",
    "PoolSpec": ".executor",
    "RayExecutor": ".ray_executor",
    "Journal": ".journal",
    "BudgetTracker": ".budget",
    "Price": ".ledger",
    "PriceTable": ".ledger",
    "validate_plan": ".plan_check",
    "FleetConfig": ".config",
    "StepSpans": ".tracing",
    "OpenTelemetryHook": ".tracing",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")


__all__ = [
    "Fleet",
    "Task",
    "Budget",
    "Plan",
    "Step",
    "Strategy",
    "Attempt",
    "Verdict",
    "Trial",
    "StepResult",
    "RunReport",
    "Totals",
    "Cost",
    "Event",
    "Policy",
    "LARGE",
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "PoolSpec",
    "Journal",
    "BudgetTracker",
    "Price",
    "PriceTable",
    "validate_plan",
    "FleetConfig",
    "StepSpans",
    "OpenTelemetryHook",
    "TinyfleetError",
    "ConfigError",
    "InputError",
    "PlanError",
    "BudgetExceeded",
    "WorkerError",
    "WorkerUnavailable",
    "EscalationFailed",
]
