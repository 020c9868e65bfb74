"""The SDK as a library: custom skills from functions on both executors, named errors from
broken workers, shared pools under concurrency, cancellation, tracing, configuration, and
the docstring examples."""

from __future__ import annotations

import asyncio
import doctest
import importlib
import json
import time
from pathlib import Path

import pytest
from helpers import sudoku_items
from pydantic import BaseModel

from orchestrator import (
    ConfigError,
    Executor,
    Fleet,
    FleetConfig,
    Plan,
    Policy,
    Step,
    StepSpans,
    Task,
)
from orchestrator.journal import Journal
from orchestrator.ray_executor import RayExecutor
from workers import Verifier, define_skill, tier
from workers.builtin import default_registry


class Sum(BaseModel):
    values: list[int]


class Total(BaseModel):
    total: int


def sloppy_sum(x: Sum) -> tuple[Total, float]:
    """A 'tiny model' that is wrong whenever the list holds a 7."""
    return Total(total=sum(x.values) + (1 if 7 in x.values else 0)), 0.8


def exact_sums(xs: list[Sum]) -> list[Total]:
    return [Total(total=sum(x.values)) for x in xs]


async def async_sum(x: Sum) -> Total:
    await asyncio.sleep(0)
    return Total(total=sum(x.values))


def check_sum(x: Sum, ans: Total) -> tuple[bool, str]:
    return ans.total == sum(x.values), f"expected {sum(x.values)}, got {ans.total}"


def raises(x: Sum) -> Total:
    raise RuntimeError("weights missing")


def wrong_type(x: Sum) -> int:
    return 3


def hangs(x: Sum) -> Total:
    time.sleep(3)
    return Total(total=0)


def sum_skill(*first: object) -> object:
    ladder = [tier(f"t{k}", fn, num_cpus=0, timeout_s=1.0) for k, fn in enumerate(first)]  # type: ignore[arg-type]
    ladder += [tier("exact", exact_sums, kind="exact", batched=True, num_cpus=0), tier("async", async_sum, num_cpus=0)]
    return define_skill("math.sum", "Sum a list of integers.", Sum, Total, ladder=ladder, verifier=check_sum)


async def test_custom_skill_with_function_tiers_and_verifier(executor: Executor) -> None:
    fleet = Fleet(executor=executor)
    fleet.add_skill(sum_skill(sloppy_sum))  # type: ignore[arg-type]
    items = [{"values": [1, 2, 3]}, {"values": [7, 1]}, {"values": [4]}]
    report = await fleet.run(Task(skill="math.sum", inputs={"items": items}))
    assert report.status == "succeeded"
    assert [o["total"] for o in report.output] == [6, 8, 4]
    assert [s.tier for s in report.steps] == ["t0", "exact", "t0"]
    assert report.steps[1].trials[0].verdict.reason == "expected 8, got 9"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "bad, match",
    [(raises, "weights missing"), (wrong_type, "returned int"), (hangs, "longer than 1 s")],
)
async def test_broken_custom_workers_give_named_errors_and_escalate(executor: Executor, bad: object, match: str) -> None:
    fleet = Fleet(executor=executor)
    fleet.add_skill(sum_skill(bad))  # type: ignore[arg-type]
    report = await fleet.run(Task(skill="math.sum", inputs={"values": [2, 3]}))
    step = report.steps[0]
    assert step.status == "verified" and step.tier == "exact" and step.escalated
    err = step.trials[0].attempt.error or ""
    assert "WorkerError" in err and match in err and "math.sum.t0" in err


async def test_twenty_concurrent_tasks_share_one_set_of_pools(executor: Executor) -> None:
    fleet = Fleet(executor=executor)
    fleet.add_skill(sum_skill(sloppy_sum))  # type: ignore[arg-type]
    tasks = [Task(skill="math.sum", inputs={"items": [{"values": [k, 7]}, {"values": [k]}]}) for k in range(20)]
    reports = await asyncio.gather(*(fleet.run(t) for t in tasks))
    assert all(r.status == "succeeded" for r in reports)
    # once for all twenty runs; the ladder's last tier ("async") is warmed in the background
    # (every tier a step may climb to starts at once) and may still be starting now
    pools = set(executor.pools())
    assert {"math.sum.exact", "math.sum.t0"} <= pools <= {"math.sum.async", "math.sum.exact", "math.sum.t0"}
    if isinstance(executor, RayExecutor):
        assert [len(executor.actor_handles(p)) for p in sorted(pools)] == [1] * len(pools)


async def test_cancelling_a_run_keeps_finished_steps_in_the_journal(tmp_path: Path) -> None:
    def slow_exact(x: Sum) -> Total:
        time.sleep(0.15)
        return Total(total=sum(x.values))

    reg = default_registry()
    reg.register(define_skill("math.sum", "", Sum, Total, ladder=[tier("slow", slow_exact, max_batch=1)], verifier=check_sum))
    fleet = Fleet(executor="local", registry=reg)
    journal = tmp_path / "j.sqlite"
    task = Task(skill="math.sum", inputs={"items": [{"values": [k]} for k in range(20)]})
    run = asyncio.ensure_future(fleet.run(task, journal=journal))
    await asyncio.sleep(0.8)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    j = Journal(journal)
    done = j.settled()
    j.close()
    assert 1 <= len(done) < 20
    report = await fleet.run(resume=journal)
    assert report.status == "succeeded" and report.totals.resumed == len(done)
    await fleet.close()


async def test_tracing_hook_gets_one_span_per_step() -> None:
    spans = StepSpans()
    async with Fleet(executor="local", hooks=[spans]) as fleet:
        await fleet.run(Task(inputs={"items": sudoku_items(4, 5, seed=40)}))
    assert len(spans.finished) == 5 and not spans.open
    for s in spans.finished:
        assert s.attributes["status"] == "verified" and s.tiers and s.end is not None and s.end >= s.start


async def test_opentelemetry_exporter_gets_step_spans_under_a_run_span() -> None:
    otel = pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from orchestrator import OpenTelemetryHook

    exporter = InMemorySpanExporter()
    provider = otel.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with Fleet(executor="local", hooks=[OpenTelemetryHook(provider.get_tracer("test"))]) as fleet:
        await fleet.run(Task(inputs={"items": sudoku_items(4, 3, seed=41)}))
    spans = exporter.get_finished_spans()
    steps = [s for s in spans if s.name.startswith("step ")]
    (root,) = [s for s in spans if s.name == "tinyfleet.run"]
    assert len(steps) == 3
    assert all(s.parent is not None and s.parent.span_id == root.context.span_id for s in steps)
    assert all(s.attributes["tinyfleet.status"] == "verified" for s in steps)


def test_config_from_file_env_and_code_with_precedence(tmp_path: Path) -> None:
    f = tmp_path / "tinyfleet.toml"
    f.write_text('executor = "local"\npolicy = "tiny_only"\n[budget]\nmax_tokens = 10\n')
    cfg = FleetConfig.load(f, env={"TINYFLEET_POLICY": "final_only", "TINYFLEET_DEADLINE_S": "30"}, journal_dir=str(tmp_path))
    assert cfg.executor == "local" and cfg.policy == "final_only"
    assert cfg.budget.max_tokens == 10 and cfg.budget.deadline_s == 30
    fleet = Fleet.from_settings(cfg)
    assert fleet.policy.mode == "final_only" and fleet.budget is not None
    with pytest.raises(ConfigError, match="'TINYFLEET_EXECUTOR'"):
        FleetConfig.load(env={"TINYFLEET_EXECUTOR": "gpu-farm"})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"budget": {"max_tokens": -5}}))
    with pytest.raises(ConfigError, match="budget.max_tokens"):
        FleetConfig.load(bad, env={})
    (tmp_path / "broken.toml").write_text("executor = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        FleetConfig.load(tmp_path / "broken.toml", env={})


def test_config_sources_rank_as_documented(tmp_path: Path) -> None:
    """pydantic-settings merges the sources: arguments > TINYFLEET_* > file > RAY_ADDRESS > defaults;
    an empty variable is unset; a budget argument is the whole budget."""
    f = tmp_path / "tinyfleet.json"
    f.write_text(json.dumps({"tinyfleet": {"address": "file:1", "budget": {"deadline_s": 5}}}))
    assert FleetConfig.load(f, env={"RAY_ADDRESS": "ray:9"}).address == "file:1"
    assert FleetConfig.load(env={"RAY_ADDRESS": "ray:9"}).address == "ray:9"
    assert FleetConfig.load(f, env={"TINYFLEET_RAY_ADDRESS": "t:1", "RAY_ADDRESS": "ray:9"}).address == "t:1"
    assert FleetConfig.load(f, env={"TINYFLEET_RAY_ADDRESS": "t:1"}, address="o:1").address == "o:1"
    assert FleetConfig.load(env={"TINYFLEET_EXECUTOR": ""}).executor == "ray"
    merged = FleetConfig.load(f, env={"TINYFLEET_MAX_TOKENS": "7"})
    assert (merged.budget.deadline_s, merged.budget.max_tokens) == (5, 7)
    given = FleetConfig.load(f, env={"TINYFLEET_MAX_TOKENS": "7"}, budget={"max_cost_usd": 1.0})
    assert (given.budget.deadline_s, given.budget.max_tokens, given.budget.max_cost_usd) == (None, None, 1.0)
    assert FleetConfig.load(env={}).budget.model_fields_set == set()
    with pytest.raises(ConfigError, match="'budget.max_tokens'"):  # the argument's field, not the variable it replaced
        FleetConfig.load(env={"TINYFLEET_MAX_TOKENS": "7"}, budget={"max_tokens": -1})


@pytest.mark.parametrize("module", ["orchestrator.fleet", "workers.custom"])
def test_docstring_examples_run(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_verifier_subclass_is_accepted_as_is() -> None:
    class Exact(Verifier):
        name = "math.exact"

        def check_batch(self, pairs):  # type: ignore[no-untyped-def]
            return [self.verdict(a.total == sum(i.values)) for i, a in pairs]

    skill = define_skill("math.sum", "", Sum, Total, ladder=[tier("exact", exact_sums, batched=True)], verifier=Exact())
    assert skill.verifier is not None and skill.verifier.name == "math.exact"
    with pytest.raises(ConfigError, match="PoolOptions"):
        tier("x", exact_sums, nonsense=1)


async def test_run_plan_with_references_runs_a_hand_built_dag() -> None:
    reg = default_registry()
    reg.register(sum_skill(sloppy_sum))  # type: ignore[arg-type]
    plan = Plan(
        steps=[
            Step(id="a", skill="math.sum", inputs={"values": [1, 2]}),
            Step(id="b", skill="math.sum", inputs={"values": [3, 4]}),
            Step(id="c", skill="math.sum", inputs={"values": [{"$ref": "a.total"}, {"$ref": "b.total"}]}),
        ],
        output="c",
    )
    async with Fleet(executor="local", registry=reg) as fleet:
        report = await fleet.run_plan(plan)
    assert report.output == {"total": 10}
    a, b, c = report.steps
    assert c.started_at >= max(a.finished_at, b.finished_at)


def write_shift(x: object) -> dict:
    name = x.name  # type: ignore[attr-defined]
    return {"code": f"def {name}(xs):\n    return [v + 2 for v in xs]\n"}


async def test_code_verifications_run_on_the_verifier_pool(executor: Executor) -> None:
    from workers.code import code_skill

    skill = code_skill()
    skill.ladder = [tier("template", write_shift, num_cpus=0)]
    fleet = Fleet(executor=executor)
    fleet.add_skill(skill)
    good = {"signature": "def shift(xs: list[int]) -> list[int]", "doc": "add 2", "tests": "def test_a():\n    assert shift([1]) == [3]\n"}
    bad = {**good, "tests": "def test_a():\n    assert shift([1]) == [4]\n"}
    report = await fleet.run(Task(skill="code.function", inputs={"items": [good, bad]}), policy=__import__("orchestrator").Policy(final="none"))
    ok, rejected = report.steps
    assert ok.status == "verified" and ok.trials[0].verdict.verifier == "code.tests"  # type: ignore[union-attr]
    assert rejected.status == "failed" and "test_a" in (rejected.error or "")
    assert "verify:code.tests" in executor.pools()
    # verifications on the pool are counted as verifier seconds (the sandbox's time inside the pool)
    assert ok.cost.verifier_s > 0 and rejected.cost.verifier_s > 0
    assert report.totals.verifier_seconds == pytest.approx(ok.cost.verifier_s + rejected.cost.verifier_s, abs=1e-5)


def test_fleet_reads_the_environment_like_the_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """What a caller leaves out of Fleet() comes from TINYFLEET_*; what it passes wins; a bad
    value is a ConfigError naming the variable, at construction (not at the first run)."""
    monkeypatch.setenv("TINYFLEET_EXECUTOR", "local")
    monkeypatch.setenv("TINYFLEET_POLICY", "tiny_only")
    monkeypatch.setenv("TINYFLEET_MAX_LARGE_CALLS", "3")
    monkeypatch.setenv("TINYFLEET_JOURNAL_DIR", str(tmp_path))
    fleet = Fleet()
    assert fleet.executor.name == "local" and fleet.policy.mode == "tiny_only"
    assert fleet.budget is not None and fleet.budget.max_large_calls == 3 and fleet.journal_dir == tmp_path
    assert Fleet(policy=Policy(mode="ladder")).policy.mode == "ladder"
    monkeypatch.setenv("TINYFLEET_EXECUTOR", "gpu-farm")
    with pytest.raises(ConfigError, match="TINYFLEET_EXECUTOR"):
        Fleet()
    assert Fleet(executor="local").executor.name == "local"
