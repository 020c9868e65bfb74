"""The CLI's live progress on stderr, built from run events and executor events (Ray start-up,
pool start-up) and nothing else, with ``rich``: on a terminal one live line (spinner, bar,
steps done, what is happening); elsewhere plain lines, one per executor event and one per
settled step (at most one a second for plans over 50 steps), the final line printed once.

``summary(report)`` is the run's totals as text (see :mod:`orchestrator.console`)."""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as _Bar

from orchestrator.console import LEGEND, totals_lines
from orchestrator.executor import ExecutorEvent
from tinyfleet_core.models import Event, RunReport

__all__ = ["Progress", "summary"]

_EVERY_STEP_UP_TO = 50


class Progress:
    """An event hook (``on_event``) and executor listener (``executor_event``) that shows how
    a run is going from its first second. ``reasons`` collects each escalation's reason, keyed
    by ``(step_id, to_tier)``, for the report printed afterwards."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.console = Console(file=stream or sys.stderr, highlight=False, soft_wrap=True)
        self.tty = self.console.is_terminal
        self.total = 0
        self.done = 0
        self.status: Counter[str] = Counter()
        self.tiers: Counter[str] = Counter()
        self.escalations = 0
        self.reasons: dict[tuple[str, str], str] = {}
        self.started = time.monotonic()
        self.phase = "starting"
        self._last_draw = 0.0
        self._last_line = ""
        self._finished = False
        self._bar: _Bar | None = None
        self._task: object = None
        if self.tty:
            self._bar = _Bar(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), console=self.console, transient=False)
            self._task = self._bar.add_task("starting", total=None)
            self._bar.start()

    # ------------------------------------------------------------------ inputs

    def executor_event(self, ev: ExecutorEvent) -> None:
        """Executor start-up (Ray connection, pools) as it happens, before and between steps."""
        if ev.kind == "pool_ready":
            return
        self.phase = ev.message
        self._say(ev.message)

    def __call__(self, ev: Event) -> None:
        if self._finished:
            return
        if ev.kind == "plan_ready":
            self.total = int(ev.data.get("steps", 0))
            n = self.total
            self.phase = "running"
            self._say(f"plan ready: {n} step{'s' if n != 1 else ''} ({ev.data.get('planner', '')} planner)")
            self._draw(force=True)
            return
        if ev.kind == "escalation":
            self.escalations += 1
            if ev.step_id and ev.tier:
                self.reasons[(ev.step_id, ev.tier)] = str(ev.data.get("reason", ""))
        elif ev.kind == "step_done":
            self.done += 1
            self.status[str(ev.data.get("status"))] += 1
            if ev.tier and ev.data.get("status") in ("verified", "accepted"):
                self.tiers[ev.tier] += 1
        elif ev.kind == "budget_stop":
            self._say(f"budget {ev.data.get('budget')} ran out: stopping dispatch")
        elif ev.kind == "run_done":
            self._draw(force=True)
            self.close()
            return
        else:
            return
        self._draw(force=ev.kind == "step_done" and (self.total <= _EVERY_STEP_UP_TO or self.done == self.total))

    def close(self) -> None:
        """Stop the live display (idempotent); nothing is printed after."""
        self._finished = True
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    # ------------------------------------------------------------------ output

    def text(self) -> str:
        """The progress line as it stands."""
        tiers = " ".join(f"{k}={v}" for k, v in sorted(self.tiers.items()))
        return (
            f"[{time.monotonic() - self.started:6.1f}s] {self.done}/{self.total} done  "
            f"verified={self.status['verified']} accepted={self.status['accepted']} "
            f"escalation events={self.escalations} failed={self.status['failed']} skipped={self.status['skipped']}"
            f"  per tier: {tiers or '-'}"
        )

    def _say(self, line: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=line)  # type: ignore[arg-type]
            self._bar.console.print(line, markup=False)
        else:
            self._print(f"[{time.monotonic() - self.started:6.1f}s] {line}")

    def _draw(self, force: bool = False) -> None:
        if self._bar is not None:
            tiers = " ".join(f"{k}={v}" for k, v in sorted(self.tiers.items())) or "-"
            self._bar.update(self._task, total=self.total or None, completed=self.done,  # type: ignore[arg-type]
                             description=f"verified={self.status['verified']} escalation events={self.escalations} per tier: {tiers}")
            return
        now = time.monotonic()
        if force or now - self._last_draw >= 1.0:
            self._last_draw = now
            self._print(self.text())

    def _print(self, line: str) -> None:
        body = line.split("] ", 1)[-1]
        if body == self._last_line:  # the same line twice (e.g. the final one): once
            return
        self._last_line = body
        self.console.print(line, markup=False)


def summary(report: RunReport) -> str:
    """A short human summary of a report: the totals, one concern per line, and the legend."""
    return "\n".join([*totals_lines(report), LEGEND])
