"""``LiveView``: a Fleet hook that serves the run viewer while runs go.

Every :class:`~tinyfleet_core.models.Event` a run emits goes to the pages as a server-sent
event (secrets stripped as it is sent). The fleet tells the view its plan when a run starts (the events name steps
but do not carry the plan) and its report when it ends, so a page shows pending steps from the
start and the full attempts once the run is done.

    from orchestrator import Fleet
    fleet = Fleet(executor="local", view=True)    # prints: tinyfleet view: http://127.0.0.1:PORT/
"""

from __future__ import annotations

from typing import Any

from orchestrator.view.document import document_from_report, plan_document
from orchestrator.view.server import ViewServer, ViewState
from tinyfleet_core.models import Event, Plan, RunReport, Task

__all__ = ["LiveView"]


class LiveView:
    """Serves one page at :attr:`url` that follows this fleet's runs (the latest run shown)."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self.state = ViewState()
        self.server = ViewServer(self.state, port, host)
        self._task: Task | None = None
        self._plans: list[Plan] = []
        self._run_start = 0

    @property
    def url(self) -> str:
        return self.server.url

    def __call__(self, event: Event) -> None:
        """The fleet hook: forward ``event`` to the pages."""
        ev = {"kind": event.kind, "run_id": event.run_id, "step_id": event.step_id, "tier": event.tier, "data": event.data, "ts": event.ts}
        message: dict[str, Any] = {"type": "event", "event": ev}  # secrets are stripped when it is sent
        self.state.add(message)

    def plan(self, task: Task, plan: Plan) -> None:
        """A run of ``task`` starts (or replans) with ``plan``: show its steps, pending."""
        if self._task is None or self._task.id != task.id:
            self._task, self._plans = task, []
            self._run_start = self.state.count  # a page loading this run replays only its events
        self._plans = [plan]  # a replan's plan replaces the one before
        self.state.set_document(plan_document(task, self._plans), seq=self._run_start)

    def report(self, report: RunReport) -> None:
        """The run ended: show its report (every attempt, verdict and cost)."""
        tasks = [self._task] if self._task is not None and self._task.id == report.task_id else []
        plans = self._plans if tasks else []
        doc, details = document_from_report(report, plans=plans, tasks=tasks, source="live")
        doc["live"] = True
        self.state.set_document((doc, details))

    def close(self) -> None:
        """Stop serving."""
        self.server.close()
