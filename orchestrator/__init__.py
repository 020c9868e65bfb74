"""tinyfleet's SDK core: typed tasks and plans, the run loop, executors, escalation, budgets,
journal and events. Everything public is re-exported here.

    from orchestrator import Fleet, Task
    report = Fleet().run_sync(Task(skill="sudoku.solve", inputs={"puzzle": grid}))
"""

from .budget import BudgetTracker
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
from .escalation import LARGE, Policy
from .executor import Executor, LocalExecutor, PoolSpec
from .fleet import Fleet
from .journal import Journal
from .ledger import Price, PriceTable
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
from .plan_check import validate_plan

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
    "PoolSpec",
    "Journal",
    "BudgetTracker",
    "Price",
    "PriceTable",
    "validate_plan",
    "TinyfleetError",
    "ConfigError",
    "InputError",
    "PlanError",
    "BudgetExceeded",
    "WorkerError",
    "WorkerUnavailable",
    "EscalationFailed",
]
