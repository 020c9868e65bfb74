"""tinyfleet's SDK core: typed tasks and plans, the run loop, executors, escalation, budgets,
journal and events. Everything public is re-exported here.

    from orchestrator import Fleet, Task
    report = Fleet().run_sync(Task(skill="sudoku.solve", inputs={"puzzle": grid}))

The data models and errors live in the bottom layer (``tinyfleet_core``), so nothing below
the run loop imports this package and every name here is imported eagerly. ``import
tinyfleet`` gives the same names and the rest of the public API.
"""

from __future__ import annotations

import tinyfleet_core
from orchestrator.budget import BudgetTracker
from orchestrator.config import FleetConfig
from orchestrator.escalation import LARGE, Policy
from orchestrator.executor import Executor, LocalExecutor, PoolSpec
from orchestrator.fleet import Fleet
from orchestrator.journal import Journal, report_steps, write_report_json
from orchestrator.ray_executor import RayExecutor
from orchestrator.tracing import OpenTelemetryHook, StepSpans
from planners.plan_check import validate_plan
from tinyfleet_core import *  # noqa: F403  (data models, errors, prices: tinyfleet_core.__all__)

__all__ = [
    "Fleet",
    "Policy",
    "LARGE",
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "PoolSpec",
    "Journal",
    "report_steps",
    "write_report_json",
    "BudgetTracker",
    "validate_plan",
    "FleetConfig",
    "StepSpans",
    "OpenTelemetryHook",
    *tinyfleet_core.__all__,
]
