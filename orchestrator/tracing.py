"""Tracing hooks: one span per step, built from run events.

``StepSpans`` records spans in memory (tier, status, verdicts, escalations, cost).
``OpenTelemetryHook`` sends the same spans to OpenTelemetry (``pip install opentelemetry-sdk``):
a root span per run and a child span per step, with explicit start and end times.

    fleet = Fleet(hooks=[OpenTelemetryHook()])
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from tinyfleet_core.errors import ConfigError
from tinyfleet_core.models import Event

__all__ = ["StepSpan", "StepSpans", "OpenTelemetryHook"]


@dataclass
class StepSpan:
    run_id: str
    step_id: str
    start: float
    end: float | None = None
    tiers: list[str] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)


class StepSpans:
    """An event hook that folds events into one span per step."""

    def __init__(self) -> None:
        self.open: dict[tuple[str, str], StepSpan] = {}
        self.finished: list[StepSpan] = []

    def _span(self, ev: Event) -> StepSpan:
        key = (ev.run_id, ev.step_id or "")
        if key not in self.open:
            self.open[key] = StepSpan(ev.run_id, ev.step_id or "", ev.ts)
        return self.open[key]

    def __call__(self, ev: Event) -> StepSpan | None:
        if ev.step_id is None:
            return None
        span = self._span(ev)
        a = span.attributes
        if ev.kind == "step_dispatched" and ev.tier:
            span.tiers.append(ev.tier)
        elif ev.kind == "verdict":
            a["verdicts"] = a.get("verdicts", 0) + 1
            a["verified"] = a.get("verified", False) or bool(ev.data.get("ok"))
        elif ev.kind == "escalation":
            a["escalations"] = a.get("escalations", 0) + 1
        elif ev.kind == "attempt":
            a["particles"] = a.get("particles", 0) + 1
        elif ev.kind == "step_done":
            span.end = ev.ts
            a.update(
                status=ev.data.get("status"),
                tier=ev.tier,
                worker_s=ev.data.get("worker_s", 0.0),
                escalated=bool(ev.data.get("escalated")),
                resumed=bool(ev.data.get("resumed")),
            )
            if ev.data.get("error"):
                a["error"] = str(ev.data["error"])[:500]
            self.finished.append(self.open.pop((ev.run_id, ev.step_id)))
            return span
        return None


class OpenTelemetryHook:
    """Sends one OpenTelemetry span per step (child of one span per run)."""

    def __init__(self, tracer: Any = None) -> None:
        try:
            from opentelemetry import trace
        except ImportError:
            raise ConfigError("OpenTelemetryHook needs opentelemetry: pip install opentelemetry-sdk") from None
        self._trace = trace
        self.tracer = tracer or trace.get_tracer("tinyfleet")
        self.spans = StepSpans()
        self._runs: dict[str, Any] = {}

    @staticmethod
    def _ns(ts: float) -> int:
        return int(ts * 1e9)

    def __call__(self, ev: Event) -> None:
        if ev.kind == "plan_ready":
            self._runs[ev.run_id] = self.tracer.start_span(
                "tinyfleet.run", start_time=self._ns(ev.ts), attributes={"tinyfleet.run_id": ev.run_id, "tinyfleet.steps": int(ev.data.get("steps", 0))}
            )
            return
        if ev.kind == "run_done":
            root = self._runs.pop(ev.run_id, None)
            if root is not None:
                root.set_attribute("tinyfleet.status", str(ev.data.get("status")))
                root.end(end_time=self._ns(ev.ts))
            return
        span = self.spans(ev)
        if span is None:
            return
        parent = self._runs.get(ev.run_id)
        ctx = self._trace.set_span_in_context(parent) if parent is not None else None
        attrs: dict[str, bool | int | float | str] = {"tinyfleet.step_id": span.step_id, "tinyfleet.tiers": ",".join(span.tiers)}
        for k, v in span.attributes.items():
            if v is not None:
                attrs[f"tinyfleet.{k}"] = v if isinstance(v, bool | int | float | str) else str(v)
        otel = self.tracer.start_span(f"step {span.step_id}", context=ctx, start_time=self._ns(span.start), attributes=attrs)
        otel.end(end_time=self._ns(span.end or time.time()))
