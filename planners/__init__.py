"""Planners: the Planner protocol and the offline rule planner (the LLM planner lives in
``planners.openai``)."""

from planners.base import Planned, Planner
from planners.rules import RulePlanner

__all__ = ["Planner", "Planned", "RulePlanner"]
