"""Compatibility: ``orchestrator.plan_check`` is ``planners.plan_check`` (kept for existing imports; new code imports ``planners.plan_check``)."""

from planners.plan_check import *  # noqa: F403
from planners.plan_check import __all__ as __all__  # noqa: F401
