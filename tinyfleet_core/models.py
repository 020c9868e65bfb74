"""Typed data that crosses boundaries: tasks, plans, attempts, verdicts, reports, events.

All of these are pydantic v2 models; they travel between processes (Ray), over HTTP
(planners) and into JSON files (journal, ``--json`` output).

A step's ``inputs`` hold literals or references to earlier steps' outputs::

    {"grid": {"$ref": "leg0"}}            # the whole output of step leg0
    {"path": {"$ref": "leg0.path"}}       # one field of it
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "Budget",
    "Task",
    "Strategy",
    "Step",
    "Plan",
    "Cost",
    "Attempt",
    "Verdict",
    "Trial",
    "StepResult",
    "Totals",
    "RunReport",
    "Event",
    "EventKind",
    "StepStatus",
    "RunStatus",
    "SelectRule",
]

_STEP_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")
_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # a journal file name: no "/", no leading "."

SelectRule = Literal["first_verified", "vote", "max_confidence"]
StepStatus = Literal["verified", "accepted", "failed", "skipped"]
RunStatus = Literal["succeeded", "failed", "partial"]
EventKind = Literal[
    "plan_ready",
    "step_dispatched",
    "attempt",
    "verdict",
    "escalation",
    "step_done",
    "budget_stop",
    "run_done",
]


def _rebuild(cls: type[BaseModel], state: dict[str, Any]) -> BaseModel:
    obj = cls.__new__(cls)
    object.__setattr__(obj, "__dict__", state)
    object.__setattr__(obj, "__pydantic_fields_set__", set(state))
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled across Ray many thousand times a second: rebuild from the already
        # validated field values (about 5x faster than pydantic's default pickling).
        return (_rebuild, (type(self), dict(self.__dict__)))


class Budget(_Strict):
    """Limits of one run. ``None`` means unlimited. When one runs out the run stops as
    ``partial`` and the report names the budget."""

    max_large_calls: int | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=0)
    max_cost_usd: float | None = Field(default=None, ge=0)
    deadline_s: float | None = Field(default=None, gt=0)
    max_steps: int = Field(default=100_000, ge=1)


class Task(_Strict):
    """What a user asks. ``goal`` or ``skill`` may be omitted when the other says enough."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    goal: str = ""
    skill: str | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    budget: Budget = Field(default_factory=Budget)

    @field_validator("id")
    @classmethod
    def _safe_id(cls, v: str) -> str:
        # the id names the run's journal file (runs/<id>.sqlite): it must stay one plain file name
        bad = next((c for c in v if ord(c) < 32 or ord(c) == 127), None)
        if bad is not None:
            raise ValueError(f"the task id contains a control character (U+{ord(bad):04X}); use 1-64 of A-Z a-z 0-9 . _ -")
        if not _TASK_ID.fullmatch(v):
            raise ValueError(
                f"the task id {v[:80]!r} is not 1-64 of A-Z a-z 0-9 . _ - starting with a letter or digit "
                "(it names the journal file, so no '/', '..' or absolute paths)"
            )
        return v

    @model_validator(mode="after")
    def _goal_or_skill(self) -> Task:
        if not self.goal.strip() and not self.skill and not self.inputs:
            raise ValueError("a task needs a 'goal', a 'skill' or 'inputs'; all three are empty")
        return self


class Strategy(_Strict):
    """How a step is attempted: particles per tier, how to pick among them, when to climb."""

    particles: int = Field(default=1, ge=1, le=64)
    select: SelectRule = "first_verified"
    max_depth: int | None = Field(default=None, ge=1, description="recursion / supervision steps cap")
    threshold: float = Field(default=0.5, ge=0.0, le=1.0, description="min confidence when unverifiable")
    start_tier: str | None = None
    retries: int = Field(default=1, ge=0, le=5, description="re-tries of a tier whose worker errored")


class Step(_Strict):
    """One node of a plan's DAG."""

    id: str
    skill: str
    inputs: dict[str, Any] = Field(default_factory=dict)
    after: list[str] = Field(default_factory=list)
    strategy: Strategy = Field(default_factory=Strategy)
    verify: bool | str = True

    @field_validator("id")
    @classmethod
    def _id_shape(cls, v: str) -> str:
        if not _STEP_ID.match(v):
            raise ValueError(
                f"step id {v!r} must start with a letter or '_' and hold only letters, digits, '_' or '-' (max 64)"
            )
        return v


class Plan(_Strict):
    """A DAG of steps plus the reference(s) that answer the task."""

    steps: list[Step]
    output: str | list[str]

    def step(self, step_id: str) -> Step:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)


class Cost(_Strict):
    """What something cost: tokens and dollars of LLM calls, seconds of workers, seconds of
    verification (``verifier_s``: every verifier call on this thing's answers, inline in
    the driver, in a thread or on a verifier pool)."""

    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    worker_s: float = 0.0
    verifier_s: float = 0.0
    particles: int = 0
    recursion_steps: int = 0
    large_calls: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            tokens_in=self.tokens_in + other.tokens_in,
            tokens_out=self.tokens_out + other.tokens_out,
            cost_usd=self.cost_usd + other.cost_usd,
            worker_s=self.worker_s + other.worker_s,
            verifier_s=self.verifier_s + other.verifier_s,
            particles=self.particles + other.particles,
            recursion_steps=self.recursion_steps + other.recursion_steps,
            large_calls=self.large_calls + other.large_calls,
        )


class Attempt(_Strict):
    """One worker's answer to one step (one particle). ``output`` is None when it gave up."""

    output: dict[str, Any] | None
    confidence: float = Field(ge=0.0, le=1.0)
    worker: str
    tier: str = ""
    particle: int = 0
    cost: Cost = Field(default_factory=Cost)
    error: str | None = None
    info: dict[str, Any] = Field(default_factory=dict)


class Verdict(_Strict):
    """A verifier's ruling on one attempt. ``judgement`` marks an opinion (LLM judge), not a proof."""

    ok: bool
    reason: str = ""
    score: float | None = None
    verifier: str = ""
    judgement: bool = False
    details: dict[str, Any] = Field(default_factory=dict)


class Trial(_Strict):
    """An attempt together with its verdict (None when the step has no verifier)."""

    attempt: Attempt
    verdict: Verdict | None = None


class StepResult(_Strict):
    """Final state of a step."""

    step_id: str
    skill: str
    status: StepStatus
    output: dict[str, Any] | None = None
    trials: list[Trial] = Field(default_factory=list)
    escalated: bool = False
    tier: str | None = None
    tiers_tried: list[str] = Field(default_factory=list)
    cost: Cost = Field(default_factory=Cost)
    resends: int = 0
    error: str | None = None
    started_at: float = 0.0
    finished_at: float = 0.0
    resumed: bool = False

    @property
    def settled(self) -> bool:
        return self.status in ("verified", "accepted")


class Totals(_Strict):
    """Run totals; ``per_tier`` counts steps settled at each tier.

    Seconds, three kinds that never overlap, so their sum (``cpu_seconds``) is the run's
    compute:

    - ``worker_seconds``: time workers spent answering this run's jobs (each batch's
      wall time inside the worker process, spread over its items), backtest jobs included.
    - ``verifier_seconds``: every verification of this run's answers, wherever it ran:
      inline in the driver (CPU time of the driver thread), a blocking verifier in a
      thread (wall time in that thread, which covers its subprocesses), or a verifier pool
      (wall time inside the verifier worker).
    - ``driver_seconds``: CPU time (``time.thread_time``) of the driver's event-loop thread
      from the start of ``Fleet.run`` to the report's totals: planning, validation,
      scheduling, batching, serialising jobs, ledger and report building. Waiting (on
      workers, on an LLM's HTTP reply, on Ray) uses no CPU of that thread and is not
      counted; inline verification is subtracted (it is in ``verifier_seconds``). Runs
      that share one event loop at the same time each count that loop's CPU for their
      whole duration, so there it is an upper bound per run.

    Dollars: ``cost_usd`` is what LLM calls cost (tokens and per-call prices: planner and
    large model); ``cpu_cost_usd`` prices ``cpu_seconds`` at the price table's CPU
    core-hour; ``total_cost_usd`` is both, and ``cost_per_step_usd`` is that per step
    (the cost per thought).
    """

    steps: int = 0
    verified: int = 0
    accepted: int = 0
    failed: int = 0
    skipped: int = 0
    resumed: int = 0
    escalated: int = 0
    per_tier: dict[str, int] = Field(default_factory=dict)
    large_model_calls: int = 0
    planner_calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    worker_seconds: float = 0.0
    verifier_seconds: float = 0.0
    driver_seconds: float = 0.0
    cpu_seconds: float = 0.0
    cpu_cost_usd: float = 0.0
    total_cost_usd: float = 0.0
    particles: int = 0
    resends: int = 0
    wall_s: float = 0.0
    cost_per_step_usd: float = 0.0
    worker_seconds_per_step: float = 0.0


class RunReport(_Strict):
    """What ``Fleet.run`` returns and ``tinyfleet run --json`` prints."""

    task_id: str
    status: RunStatus
    output: Any = None
    steps: list[StepResult] = Field(default_factory=list)
    totals: Totals = Field(default_factory=Totals)
    stopped_by: str | None = None
    error: str | None = None
    planner: str = ""
    executor: str = ""
    journal: str | None = None


class Event(_Strict):
    """One thing that happened during a run, as yielded by ``Fleet.stream``."""

    kind: EventKind
    run_id: str
    step_id: str | None = None
    tier: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    ts: float = Field(default_factory=time.time)
