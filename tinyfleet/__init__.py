"""tinyfleet: a large planner model steering a fleet of tiny verified models on Ray.

The whole public API in one flat namespace::

    import tinyfleet

    report = tinyfleet.Fleet().run_sync(tinyfleet.Task(skill="sudoku.solve", inputs={"puzzle": grid}))

The packages underneath are layered, bottom to top (``tests/test_layers.py`` holds the house to
it): ``tinyfleet_core`` (data models, errors, prices) -> ``workers`` (the worker contract, task
kits, nn models, serving, training) -> ``planners`` -> ``orchestrator`` (run loop, executors,
Fleet) -> this namespace -> the example agents -> the CLI and benchmarks.
"""

from __future__ import annotations

import tinyfleet_core
from orchestrator.budget import BudgetTracker
from orchestrator.config import FleetConfig
from orchestrator.escalation import LARGE, Policy
from orchestrator.executor import Executor, LocalExecutor, PoolSpec
from orchestrator.fleet import Fleet
from orchestrator.journal import Journal
from orchestrator.ray_executor import RayExecutor
from orchestrator.tracing import OpenTelemetryHook, StepSpans
from planners.base import Planned, Planner
from planners.openai import OpenAIPlanner
from planners.plan_check import validate_plan
from planners.rules import RulePlanner
from tinyfleet_core import *  # noqa: F403  (data models, errors, prices: tinyfleet_core.__all__)
from workers.base import Job, PoolOptions, Skill, Tier, Verifier, Worker
from workers.builtin import default_registry
from workers.custom import FunctionVerifier, FunctionWorker, define_skill, tier
from workers.llm.client import ChatClient, OpenAISettings
from workers.registry import SkillRegistry

__all__ = [
    # running
    "Fleet",
    "FleetConfig",
    "Policy",
    "LARGE",
    "BudgetTracker",
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "PoolSpec",
    "Journal",
    "StepSpans",
    "OpenTelemetryHook",
    # data
    "validate_plan",
    # skills and workers
    "define_skill",
    "tier",
    "Worker",
    "Verifier",
    "FunctionWorker",
    "FunctionVerifier",
    "Job",
    "Skill",
    "Tier",
    "PoolOptions",
    "SkillRegistry",
    "default_registry",
    # planners and the large model
    "Planner",
    "Planned",
    "RulePlanner",
    "OpenAIPlanner",
    "OpenAISettings",
    "ChatClient",
    # data models, errors, prices
    *tinyfleet_core.__all__,
]
