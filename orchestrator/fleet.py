"""``Fleet``: the public entry point. A planner, a registry of skills, an executor hosting
worker pools, an escalation policy and a budget.

    >>> from orchestrator import Fleet, Task
    >>> fleet = Fleet(executor="local")
    >>> report = fleet.run_sync(Task(skill="sudoku.solve", inputs={"puzzle": [[0, 1, 2, 0], [2, 0, 3, 0], [1, 0, 0, 0], [0, 3, 0, 0]]}))
    >>> report.status, report.output["solution"][0]
    ('succeeded', [3, 1, 2, 4])
    >>> fleet.close_sync()

Synchronous code can hold the fleet in a ``with`` block, which closes its pools on exit::

    with Fleet(executor="local") as fleet:
        report = fleet.run_sync(task)          # or fleet.run_plan_sync(plan)

With no arguments it builds the offline default: the rule planner, the bundled workers and
a local Ray (``executor="ray"``).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from orchestrator.budget import BudgetTracker
from orchestrator.config import FleetConfig
from orchestrator.escalation import Policy
from orchestrator.executor import Executor, LocalExecutor
from orchestrator.journal import Journal, journal_path
from orchestrator.learning import LearnerSettings, OnlineLearner
from orchestrator.ledger import DriverClock
from orchestrator.run import TRIALS_KEPT_UP_TO, PlanRun
from planners.base import Planner
from planners.plan_check import validate_plan
from planners.rules import RulePlanner
from tinyfleet_core.errors import ConfigError, TinyfleetError
from tinyfleet_core.models import Budget, Cost, Event, Plan, RunReport, StepResult, Task
from tinyfleet_core.prices import PriceTable
from workers.base import Skill
from workers.builtin import default_registry
from workers.registry import SkillRegistry

if TYPE_CHECKING:
    from orchestrator.view import LiveView

__all__ = ["Fleet"]

Hook = Callable[[Event], None]
T = TypeVar("T")


class Fleet:
    """A planner steering a fleet of tiny workers.

    Every argument left out is read from the environment like the CLI does
    (``TINYFLEET_EXECUTOR``, ``TINYFLEET_PLANNER``, ``TINYFLEET_POLICY``, ``TINYFLEET_JOURNAL_DIR``,
    the budget variables, ``RAY_ADDRESS``; see :class:`~orchestrator.config.FleetConfig`), then the
    defaults. ``executor``: an Executor instance, ``"ray"`` (default; starts or attaches to Ray) or
    ``"local"`` (in-process). ``address``: a Ray address to attach to (``"auto"`` or
    ``ray://...``); None starts a local Ray sized to the machine unless ``RAY_ADDRESS`` is
    set. ``hooks`` are called with every Event of every run (tracing, logging).
    ``view``: serve the run viewer on 127.0.0.1 while runs go (True: a free port; an int: that
    port); its address is printed to stderr and kept in ``fleet.view.url`` (see docs/view.md).
    ``learn``: True (or :class:`~orchestrator.learning.LearnerSettings`) runs a learner beside the
    pools that learns from settled escalations and promotes weights through the learn gate
    (``docs/learning.md``); its work is in ``fleet.learner.status()``.
    ``prices``: the price table for the report's CPU dollars (its ``cpu_core_hour_usd``);
    default: the planner's price table if it has one, else the defaults.
    """

    def __init__(
        self,
        planner: Planner | None = None,
        *,
        registry: SkillRegistry | None = None,
        executor: Executor | str | None = None,
        policy: Policy | None = None,
        budget: Budget | None = None,
        journal_dir: str | Path | None = None,
        hooks: Iterable[Hook] = (),
        address: str | None = None,
        prices: PriceTable | None = None,
        view: bool | int = False,
        learn: bool | LearnerSettings = False,
    ) -> None:
        # what the caller left out comes from the environment, as for the CLI (TINYFLEET_*)
        # (what the caller passed overrides its variable before validation, so only a bad value
        # that would be used is an error)
        env = FleetConfig.load(
            executor=executor if isinstance(executor, str) or executor is None else "local",
            address=address,
            planner="rules" if planner is not None else None,
            policy=policy.mode if policy is not None else None,
            journal_dir=str(journal_dir) if journal_dir is not None else None,
            budget=budget.model_dump() if budget is not None else None,
        )
        if planner is None:
            planner = _planner_named(env.planner)
        executor = env.executor if executor is None else executor
        address = env.address if address is None else address
        policy = Policy(mode=env.policy) if policy is None else policy
        budget = (env.budget if env.budget.model_fields_set else None) if budget is None else budget
        journal_dir = env.journal_dir if journal_dir is None else journal_dir
        self.planner: Planner = planner or RulePlanner()
        planner_prices = getattr(self.planner, "prices", None)
        self.prices: PriceTable = prices or (planner_prices if isinstance(planner_prices, PriceTable) else PriceTable())
        self.registry = registry or default_registry()
        self.policy = policy
        self.budget = budget
        self.journal_dir = Path(journal_dir) if journal_dir else None
        self.hooks: list[Hook] = list(hooks)
        self._address = address
        if isinstance(executor, str) and executor not in ("ray", "local"):
            raise ConfigError(f"executor must be 'ray', 'local' or an Executor instance, got {executor!r}")
        self._executor_arg = executor
        self._executor: Executor | None = executor if isinstance(executor, Executor) else None
        self._sync_loop: asyncio.AbstractEventLoop | None = None
        # learn=True: a learner beside the pools turns settled escalations into lessons and
        # promotes fine-tuned weights through the learn gate (orchestrator/learning.py)
        self.learner: OnlineLearner | None = (
            OnlineLearner(learn if isinstance(learn, LearnerSettings) else None) if learn else None
        )
        self.view: LiveView | None = None
        if view:
            self.serve_view(0 if view is True else int(view))

    # ------------------------------------------------------------------ setup

    @classmethod
    def from_config(cls, file: str | Path | None = None, **overrides: Any) -> Fleet:
        """A Fleet from a config file, the environment and ``overrides`` (see FleetConfig)."""
        return cls.from_settings(FleetConfig.load(file, **overrides))

    @classmethod
    def from_settings(cls, config: FleetConfig) -> Fleet:
        """A Fleet built from a :class:`FleetConfig` (the one way the CLI builds its fleet)."""
        return cls(
            planner=_planner_named(config.planner),
            executor=config.executor,
            address=config.address,
            policy=Policy(mode=config.policy),
            budget=config.budget,
            journal_dir=config.journal_dir,
        )

    @property
    def executor(self) -> Executor:
        if self._executor is None:
            if self._executor_arg == "local":
                self._executor = LocalExecutor()
            else:
                from orchestrator.ray_executor import RayExecutor

                self._executor = RayExecutor(address=self._address)
        return self._executor

    def add_skill(self, skill: Skill) -> Skill:
        """Register (or replace) a skill on this fleet's registry."""
        return self.registry.register(skill)

    def add_hook(self, hook: Hook) -> None:
        self.hooks.append(hook)

    def serve_view(self, port: int = 0) -> str:
        """Serve the live run viewer on 127.0.0.1:``port`` (0: a free one), print and return its
        address; every later run of this fleet shows there. ``fleet.view.close()`` stops it."""
        if self.view is None:
            from orchestrator.view import LiveView  # the HTTP server loads only for a fleet that serves a view

            self.view = LiveView(port)
            self.hooks.append(self.view)
            print(f"tinyfleet view: {self.view.url}", file=sys.stderr, flush=True)
        return self.view.url

    # ------------------------------------------------------------------ running

    async def plan(self, task: Task) -> tuple[Plan, Cost]:
        """Ask the planner for a plan and validate it; PlanError names the step and problem."""
        planned = await self.planner.plan(task, self.registry)
        validate_plan(planned.plan, self.registry, task.budget, task_inputs=task.inputs)
        return planned.plan, planned.cost

    async def run(
        self,
        task: Task | dict[str, Any] | None = None,
        *,
        plan: Plan | None = None,
        journal: str | Path | None = None,
        resume: str | Path | None = None,
        policy: Policy | None = None,
        budget: Budget | None = None,
        on_event: Hook | None = None,
        keep_trials: bool | None = None,
    ) -> RunReport:
        """Plan (unless ``plan`` is given), validate, and run ``task``; return its report.

        ``journal`` writes a run journal there; ``resume`` continues the run that journal
        recorded, re-running nothing that was already settled. ``policy`` and ``budget``
        override the fleet's for this run. Bad input raises InputError or PlanError.
        ``keep_trials``: whether the report's settled steps keep their trials in memory
        (default: unless the run has a journal and more than
        :data:`~orchestrator.run.TRIALS_KEPT_UP_TO` steps; without a journal always), see
        :func:`orchestrator.journal.report_steps`."""
        started = time.monotonic()
        clock = DriverClock()  # this coroutine runs on the event loop's thread: the driver
        planner_cost = Cost()
        task, plan, jr, resumed = self._resolve_task(task, plan, resume, budget, keep_trials)
        tracker = BudgetTracker(task.budget, started)
        await self.executor.start()  # a bad or unreachable Ray address fails here, before planning
        if plan is None:
            planned = await self.planner.plan(task, self.registry)
            plan, planner_cost = planned.plan, planned.cost
            tracker.add(planner_cost)
        validated = validate_plan(plan, self.registry, task.budget, task_inputs=task.inputs)
        if jr is None:
            path = Path(journal) if journal else (self.journal_dir / f"{task.id}.sqlite" if self.journal_dir else None)
            if path is not None:
                jr = Journal(path)
        if self.learner is not None:  # the learner follows the run's journal (one is kept for it)
            if jr is None:
                from workers.serving.learned import learned_dir

                jr = Journal(journal_path(learned_dir(self.learner.settings.learned_dir) / "runs", task.id))
            self.learner.start(self.executor.name)
            self.learner.watch(jr.path)
        if jr is not None:
            jr.write_start(task, plan)
        if self.view is not None:
            self.view.plan(task, plan)

        def emit(ev: Event) -> None:
            for h in [*self.hooks, *([on_event] if on_event else [])]:
                h(ev)

        pol = policy or self.policy
        run = PlanRun(
            self,
            task,
            plan,
            validated,
            policy=pol,
            budget=tracker,
            journal=jr,
            resumed=resumed,
            emit=emit,
            planner_cost=planner_cost,
            clock=clock,
            keep_trials=keep_trials,
        )
        emit(Event(kind="plan_ready", run_id=task.id, data={"steps": len(plan.steps), "resumed": len(resumed), "planner": self.planner.name}))
        status = "interrupted"
        try:
            report = await self._execute_with_replans(run, task, pol, started, emit)
            status = report.status
        finally:
            if jr is not None:
                jr.write_end(status)
                jr.close()
        if self.view is not None:
            self.view.report(report)
        emit(Event(kind="run_done", run_id=task.id, data={"status": report.status, "totals": report.totals.model_dump()}))
        return report

    def _resolve_task(
        self, task: Task | dict[str, Any] | None, plan: Plan | None, resume: str | Path | None, budget: Budget | None,
        keep_trials: bool | None = None,
    ) -> tuple[Task, Plan | None, Journal | None, dict[str, StepResult]]:
        """The task, plan, journal and settled steps a run starts from: a resumed journal's, or
        the caller's task with the run's (or the fleet's) budget put in."""
        resumed: dict[str, StepResult] = {}
        jr: Journal | None = None
        if resume is not None:
            jr = Journal.open_existing(resume)
            task = jr.task()
            plan = jr.plan()
            big = plan is not None and len(plan.steps) > TRIALS_KEPT_UP_TO
            resumed = jr.settled(trials=keep_trials if keep_trials is not None else not big)
        if task is None:
            raise ConfigError("run() needs a task (or resume= a journal)")
        if isinstance(task, dict):
            task = Task.model_validate(task)
        if budget is not None:
            task = task.model_copy(update={"budget": budget})
        elif self.budget is not None and task.budget == Budget():
            task = task.model_copy(update={"budget": self.budget})
        return task, plan, jr, resumed

    async def _execute_with_replans(self, run: PlanRun, task: Task, pol: Policy, started: float, emit: Hook) -> RunReport:
        """Run the plan; while it fails and the planner has a large model, replan (up to
        ``pol.replans`` times) keeping every settled step."""
        report = await run.execute(started)
        for _ in range(pol.replans if self.planner.has_large_model else 0):
            if report.status != "failed":
                break
            try:
                run = await self._replan(task, report, run, emit)
            except TinyfleetError as e:  # a failed replan never loses the finished steps
                return report.model_copy(update={"error": f"{report.error}; replan failed: {type(e).__name__}: {e}"})
            report = await run.execute(started)
        return report

    async def _replan(self, task: Task, report: RunReport, run: PlanRun, emit: Hook) -> PlanRun:
        """Ask the planner for a new plan after failed steps. The new run keeps every settled
        step whose id, skill and inputs are unchanged, and runs the rest."""
        plan = run.plan
        failures = [r for r in report.steps if r.status == "failed"]
        planned = await self.planner.replan(task, plan, failures, self.registry)
        run.budget.add(planned.cost)
        new = planned.plan
        validated = validate_plan(new, self.registry, task.budget, task_inputs=task.inputs)
        old_steps = {s.id: s for s in plan.steps}
        kept = {
            s.id: run.results[s.id]
            for s in new.steps
            if s.id in run.results
            and run.results[s.id].settled
            and s.id in old_steps
            and old_steps[s.id].skill == s.skill
            and old_steps[s.id].inputs == s.inputs
        }
        if run.journal is not None:
            run.journal.write_start(task, new)
        if self.view is not None:
            self.view.plan(task, new)
        emit(Event(kind="plan_ready", run_id=task.id, data={"steps": len(new.steps), "kept": len(kept), "replan": True, "planner": self.planner.name}))
        return PlanRun(
            self,
            task,
            new,
            validated,
            policy=run.policy,
            budget=run.budget,
            journal=run.journal,
            resumed={sid: r for sid, r in run.results.items() if r.resumed and sid in kept},
            emit=emit,
            planner_cost=run.planner_cost + planned.cost,
            kept={sid: r for sid, r in kept.items() if not r.resumed},
            clock=run.clock,
            keep_trials=run.keep_trials,
        )

    async def run_plan(self, plan: Plan, task: Task | None = None, **kw: Any) -> RunReport:
        """Run a hand-built plan (validated first)."""
        return await self.run(task or Task(goal="hand-built plan"), plan=plan, **kw)

    async def stream(self, task: Task | dict[str, Any] | None = None, **kw: Any) -> AsyncIterator[Event]:
        """Run ``task`` and yield its events as they happen; the last is ``run_done``.

        Errors raised by the run (bad input) are raised from the iterator."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        runner = asyncio.ensure_future(self.run(task, on_event=queue.put_nowait, **kw))
        runner.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while True:
                ev = await queue.get()
                if ev is None:
                    break
                yield ev
            runner.result()
        finally:
            if not runner.done():
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)

    def _sync(self, what: str, aw: Coroutine[Any, Any, T]) -> T:
        """Run ``aw`` on this fleet's own event loop (kept between calls, so pools started by
        one sync call serve the next)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            aw.close()
            raise ConfigError(f"{what}() was called inside a running event loop; use 'await fleet.{what.removesuffix('_sync')}(...)' there")
        if self._sync_loop is None or self._sync_loop.is_closed():
            self._sync_loop = asyncio.new_event_loop()
        return self._sync_loop.run_until_complete(aw)

    def run_sync(self, task: Task | dict[str, Any] | None = None, **kw: Any) -> RunReport:
        """``run`` for plain synchronous code. Inside a running event loop, await ``run``."""
        return self._sync("run_sync", self.run(task, **kw))

    def run_plan_sync(self, plan: Plan, task: Task | None = None, **kw: Any) -> RunReport:
        """``run_plan`` for plain synchronous code: run a hand-built plan (validated first)."""
        return self._sync("run_plan_sync", self.run_plan(plan, task, **kw))

    async def close(self) -> None:
        """Stop the fleet's pools and its learner (a local Ray started by the fleet is left for reuse)."""
        if self.learner is not None:
            self.learner.close()
        if self._executor is not None:
            await self._executor.close()
            self._executor = None if not isinstance(self._executor_arg, Executor) else self._executor

    def close_sync(self) -> None:
        """``close`` for plain synchronous code (what ``with Fleet(...) as fleet:`` calls on exit)."""
        if self._sync_loop is not None and not self._sync_loop.is_closed():
            self._sync("close_sync", self.close())
            self._sync_loop.close()
        elif self._executor is not None:
            self._sync("close_sync", self.close())
            if self._sync_loop is not None:
                self._sync_loop.close()

    def __enter__(self) -> Fleet:
        """``with Fleet(...) as fleet:`` for synchronous code: ``fleet.run_sync(task)`` and
        ``fleet.run_plan_sync(plan)`` inside; the pools are closed on exit."""
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_sync()

    async def __aenter__(self) -> Fleet:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _planner_named(name: str) -> Planner:
    """The planner a setting names: the offline rule planner, or the LLM planner from the
    environment's OpenAI settings."""
    if name == "openai":
        from planners.openai import OpenAIPlanner

        return OpenAIPlanner.from_env()
    return RulePlanner()
