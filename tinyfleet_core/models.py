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

SelectRule = Literal["first_verified", "vote", "max_confidence", "best_score"]
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

    max_large_calls: int | None = Field(default=None, ge=0, description="planner calls plus escalations to the large model")
    max_tokens: int | None = Field(default=None, ge=0, description="LLM tokens, in plus out")
    max_cost_usd: float | None = Field(default=None, ge=0, description="LLM dollars")
    deadline_s: float | None = Field(default=None, gt=0, description="wall-clock seconds for the run")
    max_steps: int = Field(default=100_000, ge=1, description="steps a plan may hold")


class Task(_Strict):
    """What a user asks. ``goal`` or ``skill`` may be omitted when the other says enough."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12], description="names the run's journal file; 1-64 of A-Z a-z 0-9 . _ -")
    goal: str = Field(default="", description="what is asked, in words (for the planner)")
    skill: str | None = Field(default=None, description="the skill, when the user already knows it")
    inputs: dict[str, Any] = Field(default_factory=dict, description="the task's data; {\"items\": [...]} is a batch, one step per item")
    budget: Budget = Field(default_factory=Budget, description="limits of the run")

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

    particles: int = Field(default=1, ge=1, le=64, description="attempts per tier (for stochastic tiers)")
    select: SelectRule = Field(
        default="first_verified",
        description=(
            "how to pick among particles; best_score: the verified answer with the verifier's best score, and the "
            "step's first tier runs alongside the skill's fallback tier (when it is on the ladder), keeping the better. "
            "Left unset, a skill's own default applies (Skill.select)"
        ),
    )
    max_depth: int | None = Field(default=None, ge=1, description="recursion / supervision steps cap")
    threshold: float = Field(default=0.5, ge=0.0, le=1.0, description="min confidence when unverifiable")
    start_tier: str | None = Field(default=None, description="skip the ladder's tiers below this one")
    retries: int = Field(default=1, ge=0, le=5, description="re-tries of a tier whose worker errored")


class Step(_Strict):
    """One node of a plan's DAG."""

    id: str = Field(description="unique in the plan; letters, digits, '_', '-'")
    skill: str = Field(description="a registered skill name")
    inputs: dict[str, Any] = Field(
        default_factory=dict,
        description='literals, {"$ref": "step"} / {"$ref": "step.field"} or {"$input": "key.sub"}',
    )
    after: list[str] = Field(default_factory=list, description="extra ordering edges: step ids that must finish first")
    strategy: Strategy = Field(default_factory=Strategy, description="how the step is attempted")
    verify: bool | str = Field(default=True, description="verify answers; or the skill's verifier name")

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

    steps: list[Step] = Field(description="the DAG's nodes")
    output: str | list[str] = Field(description="the step id(s) whose output answers the task")

    def step(self, step_id: str) -> Step:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)


class Cost(_Strict):
    """What something cost: tokens and dollars of LLM calls, seconds of workers, seconds of
    verification (``verifier_s``: every verifier call on this thing's answers, inline in
    the driver, in a thread or on a verifier pool)."""

    tokens_in: int = Field(default=0, description="LLM prompt tokens")
    tokens_out: int = Field(default=0, description="LLM completion tokens")
    cost_usd: float = Field(default=0.0, description="LLM dollars (tokens and per-call prices)")
    worker_s: float = Field(default=0.0, description="seconds a worker spent answering")
    verifier_s: float = Field(default=0.0, description="seconds spent verifying")
    particles: int = Field(default=0, description="attempts made")
    recursion_steps: int = Field(default=0, description="supervision steps of a recursive model")
    large_calls: int = Field(default=0, description="calls to the large model")

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

    output: dict[str, Any] | None = Field(description="the answer, as the skill's output payload; None when the worker gave up")
    confidence: float = Field(ge=0.0, le=1.0, description="the worker's confidence (TRM/HRM: the halting head's sigmoid)")
    worker: str = Field(description="the worker (pool) that answered")
    tier: str = Field(default="", description="the ladder tier it answered for")
    particle: int = Field(default=0, description="which particle (0 = the un-augmented input)")
    cost: Cost = Field(default_factory=Cost, description="what this attempt cost")
    error: str | None = Field(default=None, description="why there is no output (the worker's error)")
    info: dict[str, Any] = Field(default_factory=dict, description="worker-specific extras (e.g. resends, wait_s)")


class Verdict(_Strict):
    """A verifier's ruling on one attempt. ``judgement`` marks an opinion (LLM judge), not a proof."""

    ok: bool = Field(description="the answer holds")
    reason: str = Field(default="", description="why, in one line")
    score: float | None = Field(default=None, description="a verifier-specific score (e.g. a judge's confidence)")
    verifier: str = Field(default="", description="the verifier's name")
    judgement: bool = Field(default=False, description="an opinion (LLM judge), not a proof")
    details: dict[str, Any] = Field(default_factory=dict, description="verifier-specific detail (e.g. every test of code.tests)")


class Trial(_Strict):
    """An attempt together with its verdict (None when the step has no verifier)."""

    attempt: Attempt = Field(description="the answer; its tier is attempt.tier")
    verdict: Verdict | None = Field(default=None, description="the verifier's ruling; None without a verifier")


class StepResult(_Strict):
    """Final state of a step."""

    step_id: str = Field(description="the plan step's id")
    skill: str = Field(description="the step's skill")
    status: StepStatus = Field(description="verified, accepted (confident, no verifier), failed or skipped")
    output: dict[str, Any] | None = Field(default=None, description="the settled answer; None unless verified or accepted")
    trials: list[Trial] = Field(default_factory=list, description="every attempt of every tier tried, with its verdict")
    escalated: bool = Field(default=False, description="the step climbed above its first tier")
    tier: str | None = Field(default=None, description="the tier that settled it")
    tiers_tried: list[str] = Field(default_factory=list, description="the tiers it ran, in order")
    compared: dict[str, float | None] = Field(
        default_factory=dict,
        description="select='best_score': each tier compared, with the verifier's score of its best verified answer (None: none verified)",
    )
    cost: Cost = Field(default_factory=Cost, description="what the step cost, every tier together")
    resends: int = Field(default=0, description="batches re-sent after an actor died")
    error: str | None = Field(default=None, description="why it failed or was skipped")
    started_at: float = Field(default=0.0, description="Unix time the step started")
    finished_at: float = Field(default=0.0, description="Unix time the step finished")
    resumed: bool = Field(default=False, description="taken from a journal, not run again")

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

    steps: int = Field(default=0, description="steps in the run")
    verified: int = Field(default=0, description="steps settled on a verified answer")
    accepted: int = Field(default=0, description="steps settled on a confident answer (no verifier)")
    failed: int = Field(default=0, description="steps no tier answered well enough")
    skipped: int = Field(default=0, description="steps that never ran (a dependency failed, a budget ran out)")
    resumed: int = Field(default=0, description="steps taken from a journal")
    escalated: int = Field(default=0, description="steps that climbed above their first tier (not escalation events)")
    per_tier: dict[str, int] = Field(default_factory=dict, description="settled steps per tier")
    large_model_calls: int = Field(default=0, description="calls to the large model for steps (escalations and their backtests)")
    planner_calls: int = Field(default=0, description="calls the planner made to plan and replan")
    tokens_in: int = Field(default=0, description="LLM prompt tokens, planner included")
    tokens_out: int = Field(default=0, description="LLM completion tokens, planner included")
    cost_usd: float = Field(default=0.0, description="LLM dollars, planner included")
    worker_seconds: float = Field(default=0.0, description="seconds workers spent on this run's jobs")
    verifier_seconds: float = Field(default=0.0, description="seconds of verification")
    driver_seconds: float = Field(default=0.0, description="CPU seconds of the driver's event-loop thread")
    cpu_seconds: float = Field(default=0.0, description="worker + verifier + driver seconds")
    cpu_cost_usd: float = Field(default=0.0, description="cpu_seconds priced at the price table's CPU core-hour")
    total_cost_usd: float = Field(default=0.0, description="cost_usd + cpu_cost_usd")
    particles: int = Field(default=0, description="attempts made by workers")
    resends: int = Field(default=0, description="batches re-sent after an actor died")
    wall_s: float = Field(default=0.0, description="wall-clock seconds of the run")
    cost_per_step_usd: float = Field(default=0.0, description="total_cost_usd per step: the cost per thought")
    worker_seconds_per_step: float = Field(default=0.0, description="worker_seconds per step")


class RunReport(_Strict):
    """What ``Fleet.run`` returns and ``tinyfleet run --json`` prints."""

    task_id: str = Field(description="the task's id")
    status: RunStatus = Field(description="succeeded (every step settled), failed, or partial (a budget stopped it)")
    output: Any = Field(default=None, description="the plan output's answer (a list for a batch or several outputs)")
    steps: list[StepResult] = Field(default_factory=list, description="every step, in plan order")
    totals: Totals = Field(default_factory=Totals, description="the run's counts, tokens, dollars and seconds")
    stopped_by: str | None = Field(default=None, description="the budget that stopped the run (e.g. deadline_s)")
    error: str | None = Field(default=None, description="why the run failed, in one line")
    planner: str = Field(default="", description="the planner's name")
    executor: str = Field(default="", description="ray or local")
    journal: str | None = Field(default=None, description="the journal file, when there is one")
    lost_nodes: list[str] = Field(
        default_factory=list, description="Ray nodes (ids) that hosted this run's pools and were lost while it ran"
    )


class Event(_Strict):
    """One thing that happened during a run, as yielded by ``Fleet.stream``."""

    kind: EventKind = Field(description="what happened")
    run_id: str = Field(description="the run it belongs to")
    step_id: str | None = Field(default=None, description="the step, for step events")
    tier: str | None = Field(default=None, description="the tier, for tier events")
    data: dict[str, Any] = Field(
        default_factory=dict, description="kind-specific detail (an escalation's from_tier and reason, a verdict's ok and reason ...)"
    )
    ts: float = Field(default_factory=time.time, description="Unix time")
