"""The CLI's live progress display, built from run events and nothing else."""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import TextIO

from orchestrator.executor import ExecutorEvent
from tinyfleet_core.models import Event, RunReport

__all__ = ["Progress", "summary"]


class Progress:
    """An event hook that keeps one status line on stderr (redrawn in place on a terminal,
    printed at most once a second otherwise)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.total = 0
        self.done = 0
        self.status: Counter[str] = Counter()
        self.tiers: Counter[str] = Counter()
        self.escalations = 0
        self.started = time.monotonic()
        self._last_draw = 0.0

    def executor_event(self, ev: ExecutorEvent) -> None:
        """Executor start-up (Ray connection, pools) as it happens, before any step."""
        if ev.kind == "connected" or ev.kind == "connecting":
            self._line(ev.message, force=True)
        elif ev.kind == "pool_starting":
            self._line(ev.message, force=True)

    def __call__(self, ev: Event) -> None:
        if ev.kind == "plan_ready":
            if not self.total:
                self.started = time.monotonic()
            self.total = int(ev.data.get("steps", 0))
            self._line(f"plan ready: {self.total} steps ({ev.data.get('planner', '')} planner)", force=True)
            return
        if ev.kind == "escalation":
            self.escalations += 1
        elif ev.kind == "step_done":
            self.done += 1
            self.status[str(ev.data.get("status"))] += 1
            if ev.tier and ev.data.get("status") in ("verified", "accepted"):
                self.tiers[ev.tier] += 1
        elif ev.kind == "budget_stop":
            self._line(f"budget {ev.data.get('budget')} ran out: stopping dispatch", force=True)
        elif ev.kind == "run_done":
            self._draw(force=True)
            if self.tty:
                self.stream.write("\n")
            return
        else:
            return
        self._draw()

    def _draw(self, force: bool = False) -> None:
        tiers = " ".join(f"{k}={v}" for k, v in sorted(self.tiers.items()))
        text = (
            f"[{time.monotonic() - self.started:6.1f}s] {self.done}/{self.total} done  "
            f"verified={self.status['verified']} accepted={self.status['accepted']} "
            f"escalations={self.escalations} failed={self.status['failed']} skipped={self.status['skipped']}"
            f"  per tier: {tiers or '-'}"
        )
        self._line(text, force=force, inplace=True)

    def _line(self, text: str, *, force: bool = False, inplace: bool = False) -> None:
        now = time.monotonic()
        if self.tty and inplace:
            self.stream.write("\r\033[K" + text)
            self.stream.flush()
            return
        if force or now - self._last_draw >= 1.0:
            self._last_draw = now
            if self.tty:
                self.stream.write("\r\033[K")
            self.stream.write(text + "\n")
            self.stream.flush()


def _usd(x: float) -> str:
    """Dollars to three significant digits (CPU cents per run are often fractions of a cent)."""
    return "$0" if x == 0 else f"${x:.3g}"


def summary(report: RunReport) -> str:
    """A short human summary of a report (the CLI prints it when --json is not given)."""
    t = report.totals
    lines = [
        f"status: {report.status}" + (f" (stopped by budget {report.stopped_by})" if report.stopped_by else ""),
        f"steps: {t.steps}  verified: {t.verified}  accepted: {t.accepted}  failed: {t.failed}  skipped: {t.skipped}"
        + (f"  resumed: {t.resumed}" if t.resumed else ""),
        f"escalated: {t.escalated}  settled per tier: "
        + (", ".join(f"{k} {v}" for k, v in t.per_tier.items()) or "-"),
        f"cost per thought: large-model calls {t.large_model_calls}, planner calls {t.planner_calls}, "
        f"tokens {t.tokens_in}+{t.tokens_out}, LLM {_usd(t.cost_usd)} + CPU {_usd(t.cpu_cost_usd)} "
        f"= {_usd(t.total_cost_usd)} ({_usd(t.cost_per_step_usd)}/step)",
        f"cpu: worker {t.worker_seconds:.3f} s + verifier {t.verifier_seconds:.3f} s + driver {t.driver_seconds:.3f} s "
        f"= {t.cpu_seconds:.3f} s ({t.worker_seconds_per_step * 1000:.2f} ms worker/step), particles {t.particles}"
        + (f", re-sends {t.resends}" if t.resends else ""),
        f"wall: {t.wall_s:.2f} s  planner: {report.planner}  executor: {report.executor}",
    ]
    if report.journal:
        lines.append(f"journal: {report.journal}")
    if report.error:
        lines.append(f"error: {report.error}")
    return "\n".join(lines)
