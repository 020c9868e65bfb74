"""One run of a plan: schedule ready steps, climb ladders, verify, record, report.

Every step whose inputs are ready starts at once (its jobs land in the pools' batchers in
the same tick, so a pool receives them as batches). A finished step is journaled before
anything else happens, so no finished result is ever lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from workers.base import Job, Skill, Tier, Verifier
from workers.registry import validate_payload

from .budget import BudgetTracker
from .errors import BudgetExceeded, InputError, TinyfleetError, WorkerUnavailable
from .escalation import Policy, ladder_for, select
from .executor import PoolSpec
from .journal import Journal
from .ledger import totals
from .models import Attempt, Cost, Event, EventKind, Plan, RunReport, RunStatus, Step, StepResult, Task, Trial, Verdict
from .plan_check import references, resolve_inputs, split_ref, topological_order

if TYPE_CHECKING:
    from .fleet import Fleet

__all__ = ["PlanRun"]

Emit = Callable[[Event], None]


class PlanRun:
    """Executes one validated plan on a fleet's executor and planner."""

    def __init__(
        self,
        fleet: Fleet,
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
    ) -> None:
        self.fleet = fleet
        self.task = task
        self.plan = plan
        self.validated = validated
        self.policy = policy
        self.budget = budget
        self.journal = journal
        self.emit_event = emit
        self.planner_cost = planner_cost
        self.results: dict[str, StepResult] = {}
        self.outputs: dict[str, Any] = {}
        self.stop_reason: str | None = None
        self.broken_pools: dict[str, str] = {}
        for sid, r in resumed.items():
            self.results[sid] = r.model_copy(update={"resumed": True})
            self.outputs[sid] = r.output
        for sid, r in (kept or {}).items():  # settled earlier in this run (before a replan)
            self.results[sid] = r
            self.outputs[sid] = r.output

    def emit(self, kind: EventKind, step_id: str | None = None, tier: str | None = None, **data: Any) -> None:
        self.emit_event(Event(kind=kind, run_id=self.task.id, step_id=step_id, tier=tier, data=data))

    # ------------------------------------------------------------------ scheduling

    async def execute(self, started: float) -> RunReport:
        order = topological_order(self.plan)
        steps = {s.id: s for s in self.plan.steps}
        deps = {s.id: set(references(s)) | set(s.after) for s in self.plan.steps}
        for sid, r in self.results.items():
            if r.resumed:
                self.emit("step_done", sid, r.tier, status=r.status, resumed=True)
        pending = [sid for sid in order if sid not in self.results]
        running: dict[asyncio.Task[StepResult], str] = {}
        try:
            while True:
                if self.stop_reason is None:
                    for sid in list(pending):
                        blocked = [d for d in deps[sid] if d in self.results and not self.results[d].settled]
                        if blocked:
                            d = blocked[0]
                            self._finish(self._skipped(steps[sid], f"depends on step {d!r}, which {self.results[d].status}"))
                            pending.remove(sid)
                        elif all(d in self.results for d in deps[sid]):
                            pending.remove(sid)
                            running[asyncio.ensure_future(self._run_step(steps[sid]))] = sid
                if not running:
                    break
                left = self.budget.time_left()
                done, _ = await asyncio.wait(running, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    self.stop_reason = "deadline_s"
                    self.emit("budget_stop", budget="deadline_s")
                    for t, sid in running.items():
                        t.cancel()
                    await asyncio.gather(*running, return_exceptions=True)
                    for sid in running.values():
                        self._finish(self._skipped(steps[sid], f"stopped: deadline of {self.task.budget.deadline_s:g} s passed"))
                    running.clear()
                    break
                for t in done:
                    sid = running.pop(t)
                    self._finish(t.result())
                if self.budget.exhausted and self.stop_reason is None:
                    self.stop_reason = self.budget.exhausted
                    self.emit("budget_stop", budget=self.stop_reason)
        except asyncio.CancelledError:
            for t in running:
                t.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            raise
        for sid in pending:
            why = f"not run: budget {self.stop_reason} ran out" if self.stop_reason else "not run"
            self._finish(self._skipped(steps[sid], why))
        return self._report(time.monotonic() - started)

    def _finish(self, result: StepResult) -> None:
        self.results[result.step_id] = result
        if result.settled:
            self.outputs[result.step_id] = result.output
        if self.journal is not None and result.status != "skipped":
            self.journal.append(result)
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
        tot = totals(ordered, self.planner_cost, wall, planner_calls)
        failed = [r for r in ordered if r.status == "failed"]
        error = None
        if self.stop_reason:
            error = f"stopped: budget {self.stop_reason} ran out"
        elif failed:
            error = f"{len(failed)} step(s) failed; first: {failed[0].step_id}: {failed[0].error}"
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
        raw = resolve_inputs(step.inputs, self.outputs)
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
        reason = ""
        for idx, tier in enumerate(tiers):
            if idx > 0:
                res.escalated = True
                self.emit("escalation", step.id, tier.name, from_tier=tiers[idx - 1].name, reason=reason)
            res.tiers_tried.append(tier.name)
            self.emit("step_dispatched", step.id, tier.name, particles=step.strategy.particles)
            try:
                trials = await self._attempt_tier(step, skill, tier, inp, verifier, res)
            except BudgetExceeded as e:
                res.error = f"BudgetExceeded: {e}"
                res.status = "failed"
                return
            res.trials.extend(trials)
            chosen = select(trials, step.strategy.select, verified=verifier is not None)
            if chosen is not None and verifier is not None:
                res.status, res.output, res.tier = "verified", chosen.attempt.output, tier.name
                return
            if chosen is not None and chosen.attempt.confidence >= step.strategy.threshold:
                res.status, res.output, res.tier = "accepted", chosen.attempt.output, tier.name
                return
            reason = _why_climb(trials, chosen, step.strategy.threshold, verifier is not None)
        res.status = "failed"
        res.error = f"EscalationFailed: no tier gave a {'verified' if verifier else 'confident'} answer (tried {', '.join(res.tiers_tried)}); last: {reason}"

    async def _attempt_tier(
        self, step: Step, skill: Skill, tier: Tier, inp: BaseModel, verifier: Verifier | None, res: StepResult
    ) -> list[Trial]:
        attempts: list[Attempt] = []
        if tier.kind == "large":
            self.budget.before_large_call()
            try:
                a = await self.fleet.planner.solve(step, inp, skill)
            except BudgetExceeded:
                raise
            except TinyfleetError as e:
                a = Attempt(output=None, confidence=0.0, worker=self.fleet.planner.name, error=f"{type(e).__name__}: {e}", cost=Cost(large_calls=1))
            attempts.append(a)
        else:
            executor = self.fleet.executor
            n = step.strategy.particles if tier.stochastic else 1
            todo = [Job(inp, particle=k, max_depth=step.strategy.max_depth, key=step.id) for k in range(n)]
            last_error = ""
            try:
                if tier.pool_name in self.broken_pools:
                    raise WorkerUnavailable(self.broken_pools[tier.pool_name])
                await executor.ensure_pool(PoolSpec(tier.pool_name, tier.worker, tier.pool))
            except TinyfleetError as e:  # a tier that cannot start (bad checkpoint, unplaceable) is climbed past
                last_error = f"{type(e).__name__}: {e}"
                self.broken_pools.setdefault(tier.pool_name, f"pool {tier.pool_name!r} failed to start earlier in this run: {e}")
                todo, attempts = [], [
                    Attempt(output=None, confidence=0.0, worker=tier.pool_name, particle=j.particle, error=last_error)
                    for j in todo
                ]
            for _ in range(step.strategy.retries + 1):
                got = await executor.submit_many(tier.pool_name, todo)
                again = []
                for job, g in zip(todo, got, strict=True):
                    if isinstance(g, Attempt):
                        attempts.append(g)
                    elif isinstance(g, TinyfleetError):
                        last_error = f"{type(g).__name__}: {g}"
                        again.append(job)
                    elif isinstance(g, asyncio.CancelledError):
                        raise g
                    else:
                        raise g
                todo = again
                if not todo:
                    break
            for job in todo:
                attempts.append(
                    Attempt(output=None, confidence=0.0, worker=tier.pool_name, particle=job.particle, error=last_error)
                )
        cost = Cost()
        for i, a in enumerate(attempts):
            resends = int(a.info.get("resends", 0))
            res.resends += resends
            attempts[i] = a = a.model_copy(update={"tier": tier.name})
            cost = cost + a.cost
            self.emit("attempt", step.id, tier.name, worker=a.worker, particle=a.particle, confidence=a.confidence, error=a.error)
        res.cost = res.cost + cost
        self.budget.add(cost)
        trials = await self._verify(skill, inp, attempts, verifier)
        for t in trials:
            if t.verdict is not None:
                self.emit("verdict", step.id, tier.name, ok=t.verdict.ok, reason=t.verdict.reason, verifier=t.verdict.verifier)
        return trials

    async def _verify(self, skill: Skill, inp: BaseModel, attempts: list[Attempt], verifier: Verifier | None) -> list[Trial]:
        verdicts: list[Verdict | None] = [None] * len(attempts)
        pairs: list[tuple[int, BaseModel]] = []
        for i, a in enumerate(attempts):
            if a.output is None:
                verdicts[i] = Verdict(ok=False, reason=a.error or "worker gave no answer", verifier="none")
                continue
            try:
                out = skill.output_model.model_validate(a.output)
            except (ValidationError, InputError) as e:
                verdicts[i] = Verdict(ok=False, reason=f"output does not fit {skill.output_model.__name__}: {_first_error(e)}", verifier="schema")
                continue
            pairs.append((i, out))
        if verifier is not None and pairs:
            batch = [(inp, out) for _, out in pairs]
            try:
                if skill.verifier_pool is not None:
                    got = await self._verify_on_pool(skill, batch)
                elif verifier.blocking:
                    got = await asyncio.to_thread(verifier.check_batch, batch)
                else:
                    got = verifier.check_batch(batch)
                if len(got) != len(batch):
                    raise ValueError(f"returned {len(got)} verdicts for {len(batch)} answers")
            except Exception as e:  # noqa: BLE001 - a broken verifier rejects, visibly, rather than passing
                got = [Verdict(ok=False, reason=f"verifier {verifier.name!r} failed: {type(e).__name__}: {e}", verifier=verifier.name)] * len(batch)
            for (i, _), v in zip(pairs, got, strict=True):
                verdicts[i] = v
        return [Trial(attempt=a, verdict=v if (verifier is not None or (v is not None and not v.ok)) else None) for a, v in zip(attempts, verdicts, strict=True)]


    async def _verify_on_pool(self, skill: Skill, batch: list[tuple[BaseModel, BaseModel]]) -> list[Verdict]:
        from workers.verifier_pool import VerifierWorkerFactory, VerifyRequest

        assert skill.verifier is not None and skill.verifier_pool is not None
        factory = VerifierWorkerFactory(skill)
        executor = self.fleet.executor
        await executor.ensure_pool(PoolSpec(factory.name, factory, skill.verifier_pool))
        jobs = [Job(VerifyRequest(input=i.model_dump(), output=o.model_dump())) for i, o in batch]
        attempts = await asyncio.gather(*(executor.submit(factory.name, j) for j in jobs))
        return [Verdict.model_validate(a.output) for a in attempts]


def _first_error(e: Exception) -> str:
    if isinstance(e, ValidationError):
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ()))
        return f"{loc}: {err.get('msg', '')}"
    return str(e)


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
