"""One run of a plan: schedule ready steps, climb ladders, verify, record, report.

Every step whose dependencies are done starts at once, whatever else is still running (the
DAG is scheduled by :class:`~orchestrator.scheduler.StepScheduler`, on the standard library's
``graphlib.TopologicalSorter``); steps released together land in the pools' batchers in the
same tick, so a pool receives them as batches. A finished step is journaled before anything
else happens, so no finished result is ever lost; a step behind one that did not settle is
skipped, with the reason.

Inputs are checked cheaply before dispatch (the input model, and a skill's precheck if it
has one); no exact solver runs in the driver. A consistent input with no answer fails at
run time, at the ladder's exact tier, with that tier's reason.

Holdouts: a skill with ``holdout`` (``series.forecast``) has each tier answer, in the same
batch as the step's own jobs, one more job per particle: the step's input with its last
window held out (the job never sees those values). The verifier scores that answer against
the held-out truth (``Verifier.check_holdout_batch``). For the large model the holdout is a
second call, made after the first answered.

Every verification (:mod:`orchestrator.verification`) is timed into the step's
``cost.verifier_s``; the driver's own CPU time is read from the run's
:class:`~orchestrator.ledger.DriverClock` when the report is built.

Scale: the loop's cost per step does not grow with the plan. At most
:data:`MAX_RUNNING_STEPS` steps are in flight, and finished ones are found without a scan
(:class:`~orchestrator.inflight.InFlight`). The steps that finish in one tick are journaled
in one transaction, committed before any of them is reported or releases a dependant. A run
with a journal and more than :data:`TRIALS_KEPT_UP_TO` steps keeps its settled steps in
memory without their trials (the journal has every attempt and verdict;
:func:`orchestrator.journal.report_steps` reads them back, ``run --json`` prints the whole
report from there): a summary per step, not every attempt's payload.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import BaseModel

from orchestrator.budget import BudgetTracker
from orchestrator.escalation import Policy, best_scored, companion_tier, ladder_for, select, select_rule
from orchestrator.executor import Executor, PoolSpec
from orchestrator.inflight import InFlight, fewer_collections
from orchestrator.journal import Journal
from orchestrator.ledger import DriverClock, totals
from orchestrator.scheduler import StepScheduler
from orchestrator.verification import verify_attempts
from planners.base import Planner
from planners.plan_check import split_ref
from tinyfleet_core.errors import (
    BudgetExceeded,
    InputError,
    TinyfleetError,
    WorkerUnavailable,
)
from tinyfleet_core.models import (
    Attempt,
    Cost,
    Event,
    EventKind,
    Plan,
    RunReport,
    RunStatus,
    Step,
    StepResult,
    Task,
    Trial,
)
from tinyfleet_core.prices import PriceTable
from tinyfleet_core.refs import resolve_references
from workers.base import Job, Skill, Tier, Verifier
from workers.registry import SkillRegistry, validate_payload


class FleetParts(Protocol):
    """What a run needs of the Fleet that starts it (:class:`orchestrator.fleet.Fleet` is one)."""

    @property
    def planner(self) -> Planner: ...

    @property
    def executor(self) -> Executor: ...

    @property
    def registry(self) -> SkillRegistry: ...

    @property
    def prices(self) -> PriceTable: ...

__all__ = ["PlanRun", "MAX_RUNNING_STEPS", "TRIALS_KEPT_UP_TO"]

Emit = Callable[[Event], None]

MAX_RUNNING_STEPS = 10_000
"""Steps one run has in flight at most (started, not finished). Far above what pools take
at once (a pool has ``replicas x max_concurrency`` batches in Ray), it bounds the driver's
memory for the steps in flight (a few kB each) on plans of 100,000 steps; the rest wait as
step ids, in plan order, and start as running steps finish."""

TRIALS_KEPT_UP_TO = 5_000
"""A run with a journal and more steps than this keeps its settled steps' trials in the
journal only (``Fleet.run(keep_trials=...)`` decides for one run)."""


class PlanRun:
    """Executes one validated plan on a fleet's executor and planner."""

    def __init__(
        self,
        fleet: FleetParts,
        task: Task,
        plan: Plan,
        validated: dict[str, BaseModel],
        *,
        policy: Policy,
        budget: BudgetTracker,
        journal: Journal | None,
        resumed: dict[str, StepResult],
        emit: Emit,
        planner_cost: Cost,
        kept: dict[str, StepResult] | None = None,
        clock: DriverClock | None = None,
        keep_trials: bool | None = None,
    ) -> None:
        self.fleet = fleet
        self.task = task
        self.plan = plan
        self.steps = {s.id: s for s in plan.steps}
        self.validated = validated
        self.policy = policy
        self.budget = budget
        self.journal = journal
        self.emit_event = emit
        self.planner_cost = planner_cost
        self.clock = clock or DriverClock()
        self.results: dict[str, StepResult] = {}
        self.outputs: dict[str, Any] = {}
        self.stop_reason: str | None = None
        self.broken_pools: dict[str, str] = {}
        if keep_trials is None:
            keep_trials = journal is None or len(plan.steps) <= TRIALS_KEPT_UP_TO
        self.keep_trials = keep_trials or journal is None  # without a journal nothing else holds them
        self.max_running = MAX_RUNNING_STEPS
        for sid, r in resumed.items():
            self.results[sid] = r.model_copy(update={"resumed": True, **({} if self.keep_trials else {"trials": []})})
            self.outputs[sid] = r.output
        for sid, r in (kept or {}).items():  # settled earlier in this run (before a replan)
            self.results[sid] = r
            self.outputs[sid] = r.output

    def emit(self, kind: EventKind, step_id: str | None = None, tier: str | None = None, **data: Any) -> None:
        self.emit_event(Event(kind=kind, run_id=self.task.id, step_id=step_id, tier=tier, data=data))

    # ------------------------------------------------------------------ scheduling

    async def execute(self, started: float) -> RunReport:
        schedule = StepScheduler(self.plan)
        self._warm_pools()
        for sid, r in self.results.items():
            if r.resumed:
                self.emit("step_done", sid, r.tier, status=r.status, resumed=True)
        flight: InFlight[StepResult] = InFlight(self.max_running)
        with fewer_collections(len(self.plan.steps)):
            await self._loop(schedule, flight)
        why = f"not run: budget {self.stop_reason} ran out" if self.stop_reason else "not run"
        never = [*flight.waiting, *schedule.unreleased()]  # released but not started (a stop), or never released
        self._finish_all([self._skipped(self.steps[sid], why) for sid in never if sid not in self.results])
        return self._report(time.monotonic() - started)

    async def _loop(self, schedule: StepScheduler, flight: InFlight[StepResult]) -> None:
        """Start what is ready, record what finished, until nothing runs (or a deadline)."""
        try:
            while True:
                if self.stop_reason is None:
                    self._dispatch(schedule, flight)
                if not flight.running:
                    break
                done = await flight.finished(self.budget.time_left())
                if done is None:
                    await self._stop_at_deadline(flight)
                    break
                self._finish_all([r for _, r in done])  # one journal transaction for the tick's steps
                flight.raise_failure()  # a step that raised ends the run, once the rest are journaled
                for sid, _ in done:
                    schedule.done(sid)
                if self.budget.exhausted and self.stop_reason is None:
                    self.stop_reason = self.budget.exhausted
                    self.emit("budget_stop", budget=self.stop_reason)
        except (asyncio.CancelledError, Exception):  # no step keeps running after the run ends
            await flight.cancel()
            raise

    def _warm_pools(self) -> None:
        """Start, at once and in the background, every pool any step's ladder may climb to,
        fallback tiers and verifier pools included, so that no pool start sits on the
        critical path of a first escalation. A step whose input is known (no ``$ref``) warms
        only the tiers that accept it. A pool that fails to start here is recorded in
        ``broken_pools`` and climbed past by the steps that reach it, with the reason."""
        specs: dict[str, PoolSpec] = {}
        for step in self.plan.steps:
            if step.id in self.results:
                continue
            try:
                skill = self.fleet.registry.get(step.skill)
                tiers = ladder_for(step, skill, self.policy, self.fleet.planner.has_large_model)
            except TinyfleetError:
                continue  # the step itself reports the problem when it runs
            known = self.validated.get(step.id)
            if known is not None:
                tiers = [t for t in tiers if t.accepts is None or t.accepts(known)] or tiers[-1:]
            for t in tiers:
                if t.kind != "large" and t.pool_name not in self.broken_pools:
                    specs.setdefault(t.pool_name, PoolSpec(t.pool_name, t.worker, t.pool))
            if skill.verifier_pool is not None and skill.verifier is not None and step.verify:
                from workers.serving.verifier_pool import VerifierWorkerFactory

                factory = VerifierWorkerFactory(skill)
                specs.setdefault(factory.name, PoolSpec(factory.name, factory, skill.verifier_pool))
        for spec in specs.values():
            self.fleet.executor.warm(spec, on_error=lambda e, name=spec.name: self._warm_failed(name, e))

    def _warm_failed(self, pool: str, e: BaseException) -> None:
        if isinstance(e, TinyfleetError):  # other errors: the step that needs the pool meets them itself
            self.broken_pools.setdefault(pool, f"pool {pool!r} failed to start earlier in this run: {e}")

    def _dispatch(self, schedule: StepScheduler, flight: InFlight[StepResult]) -> None:
        """Start the steps the schedule releases, in plan order, while fewer than
        :data:`MAX_RUNNING_STEPS` run. A step finished earlier (resumed, kept) and a step
        behind an unsettled dependency (skipped, with the reason) are done at once, which may
        release more."""
        waiting = flight.waiting
        while True:
            waiting.extend(schedule.ready())
            if not waiting:
                return
            while waiting:
                sid = waiting[0]
                if sid not in self.results:
                    blocked = next((d for d in schedule.deps[sid] if not self.results[d].settled), None)
                    if blocked is None:
                        if flight.full:
                            return  # the rest start as running steps finish
                        flight.start(waiting.popleft(), self._run_step(self.steps[sid]))
                        continue
                    why = f"depends on step {blocked!r}, which {self.results[blocked].status}"
                    self._finish(self._skipped(self.steps[sid], why))
                waiting.popleft()
                schedule.done(sid)

    async def _stop_at_deadline(self, flight: InFlight[StepResult]) -> None:
        self.stop_reason = "deadline_s"
        self.emit("budget_stop", budget="deadline_s")
        why = f"stopped: deadline of {self.task.budget.deadline_s:g} s passed"
        stopped, finished = await flight.cancel()  # a step done in the deadline's tick keeps its result
        self._finish_all([*(r for _, r in finished), *(self._skipped(self.steps[sid], why) for sid in stopped)])

    def _finish(self, result: StepResult) -> None:
        self._finish_all([result])

    def _finish_all(self, results: list[StepResult]) -> None:
        """Record finished steps: journal them first (one transaction), then keep each (without
        its trials when this run keeps them in the journal only) and report it."""
        if self.journal is not None:
            self.journal.append_many([r for r in results if r.status != "skipped"])
        for result in results:
            if not self.keep_trials and result.settled:
                result.trials = []  # in the journal; report_steps() reads them back
            self.results[result.step_id] = result
            if result.settled:
                self.outputs[result.step_id] = result.output
            self.emit(
                "step_done",
                result.step_id,
                result.tier,
                status=result.status,
                escalated=result.escalated,
                error=result.error,
                worker_s=result.cost.worker_s,
            )

    def _skipped(self, step: Step, why: str) -> StepResult:
        now = time.time()
        return StepResult(step_id=step.id, skill=step.skill, status="skipped", error=why, started_at=now, finished_at=now)

    def _report(self, wall: float) -> RunReport:
        ordered = [self.results[s.id] for s in self.plan.steps if s.id in self.results]
        all_settled = all(r.settled for r in ordered) and len(ordered) == len(self.plan.steps)
        status: RunStatus = "succeeded" if all_settled else ("partial" if self.stop_reason else "failed")
        out_refs = [self.plan.output] if isinstance(self.plan.output, str) else list(self.plan.output)
        values = []
        for ref in out_refs:
            head, fields = split_ref(ref)
            value = self.outputs.get(head)
            for f in fields:
                value = value.get(f) if isinstance(value, dict) else None
            values.append(value)
        output = values[0] if isinstance(self.plan.output, str) else values
        planner_calls = self.planner_cost.large_calls
        failed = [r for r in ordered if r.status == "failed"]
        error = None
        if self.stop_reason:
            error = f"stopped: budget {self.stop_reason} ran out"
        elif failed:
            error = f"{len(failed)} step(s) failed; first: {failed[0].step_id}: {failed[0].error}"
        tot = totals(
            ordered, self.planner_cost, wall, planner_calls, driver_s=self.clock.driver_seconds(), prices=self.fleet.prices
        )
        return RunReport(
            task_id=self.task.id,
            status=status,
            output=output,
            steps=ordered,
            totals=tot,
            stopped_by=self.stop_reason,
            error=error,
            planner=self.fleet.planner.name,
            executor=self.fleet.executor.name,
            journal=str(self.journal.path) if self.journal else None,
            lost_nodes=self.fleet.executor.lost_nodes_since(time.monotonic() - wall),
        )

    # ------------------------------------------------------------------ one step

    async def _run_step(self, step: Step) -> StepResult:
        res = StepResult(step_id=step.id, skill=step.skill, status="failed", started_at=time.time())
        try:
            await self._climb(step, res)
        except asyncio.CancelledError:
            raise
        except TinyfleetError as e:
            res.status, res.error = "failed", f"{type(e).__name__}: {e}"
        res.finished_at = time.time()
        return res

    def _input(self, step: Step, skill: Skill) -> BaseModel:
        if step.id in self.validated:
            return self.validated[step.id]
        raw = resolve_references(step.inputs, self.outputs, self.task.inputs)  # $ref and $input
        inp = validate_payload(skill.input_model, raw, what=f"step {step.id!r} ({skill.name}) input")
        if skill.precheck is not None:
            skill.precheck(inp)
        return inp

    async def _climb(self, step: Step, res: StepResult) -> None:
        skill = self.fleet.registry.get(step.skill)
        try:
            inp = self._input(step, skill)
        except InputError as e:
            res.error = f"InputError: {e}"
            return
        tiers = ladder_for(step, skill, self.policy, self.fleet.planner.has_large_model)
        tiers = [t for t in tiers if t.accepts is None or t.accepts(inp)] or tiers[-1:]
        verifier = skill.verifier if step.verify else None
        rule = select_rule(step, skill)
        lower = verifier is not None and verifier.score_lower_is_better
        companion = companion_tier(tiers, skill) if rule == "best_score" and verifier is not None else None
        reason = ""
        prev: str | None = None
        if companion is not None and verifier is not None:  # best_score: the first tier and the fallback run together
            try:
                why = await self._run_compared(step, skill, (tiers[0], companion), inp, verifier, res, lower)
            except BudgetExceeded as e:
                res.error = f"BudgetExceeded: {e}"
                res.status = "failed"
                return
            if why is None:
                return
            reason, prev = why, tiers[0].name
            tiers = [t for t in tiers[1:] if t is not companion]
        for tier in tiers:
            if prev is not None:
                res.escalated = True
                self.emit("escalation", step.id, tier.name, from_tier=prev, reason=reason)
            prev = tier.name
            res.tiers_tried.append(tier.name)
            self.emit("step_dispatched", step.id, tier.name, particles=step.strategy.particles)
            try:
                trials = await self._attempt_tier(step, skill, tier, inp, verifier, res)
            except BudgetExceeded as e:
                res.error = f"BudgetExceeded: {e}"
                res.status = "failed"
                return
            res.trials.extend(trials)
            chosen = select(trials, rule, verified=verifier is not None, lower_is_better=lower)
            if chosen is not None and verifier is not None:
                res.status, res.output, res.tier = "verified", chosen.attempt.output, tier.name
                return
            if chosen is not None and chosen.attempt.confidence >= step.strategy.threshold:
                res.status, res.output, res.tier = "accepted", chosen.attempt.output, tier.name
                return
            reason = _why_climb(trials, chosen, step.strategy.threshold, verifier is not None)
            if tier.kind == "exact":
                errors = [t.attempt.error for t in trials if t.attempt.output is None and t.attempt.error]
                if errors:  # an exact solver that finds nothing is the answer: there is none
                    reason = f"the exact tier {tier.name!r} found no answer: {errors[0]}"
        res.status = "failed"
        res.error = (
            f"EscalationFailed: step {step.id!r} ({skill.name}): no tier gave a "
            f"{'verified' if verifier else 'confident'} answer (tried {', '.join(res.tiers_tried)}); last: {reason}"
        )

    async def _run_compared(
        self, step: Step, skill: Skill, pair: tuple[Tier, Tier], inp: BaseModel, verifier: Verifier, res: StepResult,
        lower: bool,
    ) -> str | None:
        """``select="best_score"``: the step's first tier and its companion (the skill's
        fallback) answer at the same time; the verified answer with the better verifier score
        settles the step (ties: the first tier), and each tier's best score is recorded in
        ``res.compared``. Returns None when settled, else why the step climbs on."""
        for t in pair:
            res.tiers_tried.append(t.name)
            self.emit("step_dispatched", step.id, t.name, particles=step.strategy.particles)
        got = await asyncio.gather(*(self._attempt_tier(step, skill, t, inp, verifier, res) for t in pair), return_exceptions=True)
        per_tier: list[list[Trial]] = []
        for g in got:
            if isinstance(g, BaseException):
                raise g
            per_tier.append(g)
        trials = [t for g in per_tier for t in g]
        res.trials.extend(trials)
        for tier, g in zip(pair, per_tier, strict=True):
            best = best_scored(g, lower_is_better=lower)
            res.compared[tier.name] = best.verdict.score if best is not None and best.verdict is not None else None
        chosen = best_scored(trials, lower_is_better=lower)
        if chosen is None:
            return _why_climb(trials, None, step.strategy.threshold, True)
        res.status, res.output, res.tier = "verified", chosen.attempt.output, chosen.attempt.tier
        return None  # the two tiers are one rung: settling on either is not an escalation

    async def _attempt_tier(
        self, step: Step, skill: Skill, tier: Tier, inp: BaseModel, verifier: Verifier | None, res: StepResult
    ) -> list[Trial]:
        wants_holdout = skill.holdout is not None and verifier is not None
        holdout = skill.holdout(inp) if wants_holdout and skill.holdout is not None else None
        if tier.kind == "large":
            attempts, held = await self._ask_large(step, skill, inp, holdout)
        else:
            attempts, held = await self._ask_pool(step, tier, inp, holdout)
        if wants_holdout and not held:
            held = [None] * len(attempts)
        cost = Cost()
        for i, a in enumerate(attempts):
            resends = int(a.info.get("resends", 0))
            res.resends += resends
            attempts[i] = a = a.model_copy(update={"tier": tier.name})
            cost = cost + a.cost
            self.emit("attempt", step.id, tier.name, worker=a.worker, particle=a.particle, confidence=a.confidence, error=a.error)
        for h in held:
            if h is not None:  # the holdout job's work is the tier's: worker seconds, tokens, calls; not a particle
                res.resends += int(h.info.get("resends", 0))
                cost = cost + h.cost.model_copy(update={"particles": 0})
        res.cost = res.cost + cost
        if tier.kind != "large":  # the large model's calls were charged as they returned
            self.budget.add(cost)
        trials, verify_s = await verify_attempts(
            skill, inp, attempts, verifier, held if wants_holdout else None, executor=self.fleet.executor, clock=self.clock
        )
        res.cost = res.cost + Cost(verifier_s=verify_s)
        for t in trials:
            if t.verdict is not None:
                self.emit("verdict", step.id, tier.name, ok=t.verdict.ok, reason=t.verdict.reason, verifier=t.verdict.verifier)
        return trials

    async def _ask_large(
        self, step: Step, skill: Skill, inp: BaseModel, holdout: BaseModel | None
    ) -> tuple[list[Attempt], list[Attempt | None]]:
        """The large model's answer; with a holdout, a second call on the held-out input,
        made only after the first answered (so a budget never runs over by a call)."""

        async def ask(x: BaseModel) -> Attempt:
            try:
                return await self.fleet.planner.solve(step, x, skill)
            except BudgetExceeded:
                raise
            except TinyfleetError as e:
                return Attempt(output=None, confidence=0.0, worker=self.fleet.planner.name, error=f"{type(e).__name__}: {e}", cost=Cost(large_calls=1))

        self.budget.before_large_call()
        main = await ask(inp)
        self.budget.add(main.cost)  # charged now, so the holdout call sees it
        held: list[Attempt | None] = []
        if holdout is not None and main.output is not None:
            try:
                self.budget.before_large_call()
                h = await ask(holdout)
                self.budget.add(h.cost.model_copy(update={"particles": 0}))
                held.append(h)
            except BudgetExceeded as e:  # the answer stays unverified; the run stops on the spent budget
                held.append(Attempt(output=None, confidence=0.0, worker=self.fleet.planner.name, error=f"BudgetExceeded: {e}"))
        return [main], held

    async def _ask_pool(
        self, step: Step, tier: Tier, inp: BaseModel, holdout: BaseModel | None
    ) -> tuple[list[Attempt], list[Attempt | None]]:
        """One job per particle, plus (with a holdout) one holdout job per particle, all in
        one submission so they share batches; jobs whose worker errored are re-tried."""
        executor = self.fleet.executor
        n = step.strategy.particles if tier.stochastic else 1
        depth = step.strategy.max_depth
        jobs = [Job(inp, particle=k, max_depth=depth, key=step.id) for k in range(n)]
        if holdout is not None:
            jobs += [Job(holdout, particle=k, max_depth=depth, key=f"{step.id}:holdout") for k in range(n)]
        got: list[Attempt | None] = [None] * len(jobs)
        last_error = ""
        todo = list(range(len(jobs)))
        try:
            if tier.pool_name in self.broken_pools:
                raise WorkerUnavailable(self.broken_pools[tier.pool_name])
            await executor.ensure_pool(PoolSpec(tier.pool_name, tier.worker, tier.pool))
        except TinyfleetError as e:  # a tier that cannot start (bad checkpoint, unplaceable) is climbed past
            last_error = f"{type(e).__name__}: {e}"
            self.broken_pools.setdefault(tier.pool_name, f"pool {tier.pool_name!r} failed to start earlier in this run: {e}")
            todo = []
        for _ in range(step.strategy.retries + 1):
            if not todo:
                break
            answers = await executor.submit_many(tier.pool_name, [jobs[i] for i in todo])
            again = []
            for i, g in zip(todo, answers, strict=True):
                if isinstance(g, Attempt):
                    got[i] = g
                elif isinstance(g, TinyfleetError):
                    last_error = f"{type(g).__name__}: {g}"
                    again.append(i)
                else:
                    raise g
            todo = again
        out = [
            g if g is not None else Attempt(output=None, confidence=0.0, worker=tier.pool_name, particle=jobs[i].particle, error=last_error)
            for i, g in enumerate(got)
        ]
        return out[:n], list(out[n:])


def _why_climb(trials: list[Trial], chosen: Trial | None, threshold: float, verified: bool) -> str:
    if not trials:
        return "the tier gave no attempt"
    if verified:
        reasons = [t.verdict.reason for t in trials if t.verdict is not None and t.verdict.reason]
        return f"verifier rejected all {len(trials)} attempt(s): {reasons[0] if reasons else 'no answer'}"
    if chosen is None:
        errs = [t.attempt.error for t in trials if t.attempt.error]
        return errs[0] if errs else "no valid answer"
    return f"best confidence {chosen.attempt.confidence:.2f} is under the threshold {threshold:.2f}"
