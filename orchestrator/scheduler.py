"""Which steps of a plan may start now: the plan's DAG on the standard library's
:class:`graphlib.TopologicalSorter` (``prepare`` / ``get_ready`` / ``done``).

A step is released as soon as every step it depends on (through ``$ref`` or ``after``) is
done, whatever else is still running: there are no levels. The run loop marks a step done
when its result is recorded, whether it settled or not; what a dependant of an unsettled step
does (it is skipped, with the reason) is the run loop's decision, not the scheduler's.
"""

from __future__ import annotations

import graphlib

from planners.plan_check import dependencies, topological_order
from tinyfleet_core.models import Plan

__all__ = ["StepScheduler"]


class StepScheduler:
    """Releases a plan's steps in dependency order, each as soon as its dependencies are done."""

    def __init__(self, plan: Plan) -> None:
        self.deps: dict[str, list[str]] = {s.id: dependencies(s) for s in plan.steps}
        self._position = {s.id: k for k, s in enumerate(plan.steps)}
        self._sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter(self.deps)
        try:
            self._sorter.prepare()
        except graphlib.CycleError:
            topological_order(plan)  # raises the PlanError that names the cycle
            raise
        self._unreleased = set(self.deps)

    def ready(self) -> list[str]:
        """Steps released since the last call (every dependency done), in the plan's order."""
        got = sorted(self._sorter.get_ready(), key=self._position.__getitem__)
        self._unreleased.difference_update(got)
        return got

    def done(self, step_id: str) -> None:
        """``step_id`` has its result: its dependants may be released."""
        self._sorter.done(step_id)

    def unreleased(self) -> list[str]:
        """Steps never released (a dependency is still running or never ran), in the plan's order."""
        return sorted(self._unreleased, key=self._position.__getitem__)
