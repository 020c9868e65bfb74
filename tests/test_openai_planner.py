"""The OpenAI-compatible planner, large model and small-LLM followers, over real HTTP.

Every test runs the real ``openai`` client against ``ScriptedOpenAIServer`` (a test
fixture on 127.0.0.1 with scripted replies and injected faults) and the real run loop on
``Fleet(executor="local")``.
"""

from __future__ import annotations

import json
import logging
import re
import time
import traceback
from pathlib import Path
from typing import Any

import pytest
from openai_server import Fault, RecordedRequest, Reply, ScriptedOpenAIServer, openai_server  # noqa: F401
from pydantic import BaseModel

from orchestrator import (
    Budget,
    ConfigError,
    Event,
    Fleet,
    Plan,
    PlanError,
    Policy,
    Price,
    PriceTable,
    StepResult,
    Strategy,
    Task,
    Trial,
    Verdict,
    validate_plan,
)
from planners.openai import OpenAIPlanner
from planners.rules import RulePlanner
from tinyfleet_core.errors import ModelOutputError
from tinyfleet_core.models import Attempt
from workers.base import Skill, Tier
from workers.builtin import default_registry, maze_skill, route_skill, sudoku_skill
from workers.kits.classic import MazeGreedyWorker
from workers.kits.maze import MazeInput, bfs_path, with_endpoints
from workers.llm.client import LLMRequestError, LLMUnavailable, OpenAISettings
from workers.llm.followers import LLMJudgeVerifier, SmallLLMWorker, llm_tier, particle_seed
from workers.registry import SkillRegistry

KEY = "sk-tinyfleet-test-" + "S3CRETkey" * 3
MODEL = "big-test-model"
PRICES = PriceTable(models={MODEL: Price(per_mtok_in=2.5, per_mtok_out=10.0, per_call=0.001)})

# A floor where greedy best-first search takes 11 moves from the top-left to the bottom-right
# and breadth-first search takes 9: the greedy tier's answer fails the shortest-path check.
FLOOR = ["......", "......", "...#..", ".#...#", "......"]
LEG0 = with_endpoints(FLOOR, (0, 0), (4, 5))  # greedy is not shortest here
LEG1 = with_endpoints(FLOOR, (4, 5), (0, 5))  # greedy is shortest here


def classic_registry() -> SkillRegistry:
    """The default skills with the maze ladder's tiny tiers left out: these tests are about the
    large model's planning and escalation, and the bundled frame TRM reads FLOOR-sized grids
    (it would settle the legs before the greedy tier that the tests escalate from)."""
    registry = default_registry()
    maze = registry.get("maze.route")
    maze.ladder = [t for t in maze.ladder if t.kind != "tiny"]
    return registry
GOAL = (
    "Plan a delivery route on this warehouse floor: from the dock at the top-left to the packing "
    "station at the bottom-right, then on to the loading bay at the top-right. Give me the whole route."
)
ROUTE_PLAN = {
    "steps": [
        {"id": "leg0", "skill": "maze.route", "inputs": {"grid": LEG0}},
        {"id": "leg1", "skill": "maze.route", "inputs": {"grid": LEG1}},
        {"id": "route", "skill": "route.assemble", "inputs": {"legs": [{"$ref": "leg0.path"}, {"$ref": "leg1.path"}]}},
    ],
    "output": "route",
}
PLAN_USAGE = {"prompt_tokens": 1200, "completion_tokens": 300}
SOLVE_USAGE = {"prompt_tokens": 400, "completion_tokens": 50}


def settings_for(server: ScriptedOpenAIServer, **kw: Any) -> OpenAISettings:
    """Fast settings for tests: short timeouts, tiny backoffs."""
    base: dict[str, Any] = {
        "api_key": KEY,
        "base_url": server.base_url,
        "large_model": MODEL,
        "small_model": "small-test-model",
        "timeout_s": 0.5,
        "max_attempts": 4,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
        "retry_after_cap_s": 0.3,
    }
    base.update(kw)
    return OpenAISettings(**base)


def planner_for(server: ScriptedOpenAIServer, **kw: Any) -> OpenAIPlanner:
    return OpenAIPlanner(settings_for(server, **kw), prices=PRICES)


def step_input(req: RecordedRequest) -> dict[str, Any]:
    """The JSON input a solve/particle request carries in its first user message."""
    first = next(str(m["content"]) for m in req.messages if m.get("role") == "user")
    return json.loads(first.split("(JSON): ", 1)[1])


def maze_answer(req: RecordedRequest) -> Reply:
    """What a competent large model would answer: a shortest path (found by BFS here)."""
    path = [list(c) for c in bfs_path(step_input(req)["grid"])]
    return Reply.json({"path": path}, **SOLVE_USAGE)


def competent_model(req: RecordedRequest) -> Reply:
    if req.schema_name == "tinyfleet_plan":
        return Reply.json(ROUTE_PLAN, **PLAN_USAGE)
    if req.schema_name == "maze_route":
        return maze_answer(req)
    return Reply(content="", prompt_tokens=1, completion_tokens=0)


def by_id(steps: list[StepResult]) -> dict[str, StepResult]:
    return {s.step_id: s for s in steps}


def expected_cost(server: ScriptedOpenAIServer) -> float:
    return sum(PRICES.price(m).cost(i, o) for m, i, o in server.usage)


# ---------------------------------------------------------------------------- the main job


async def test_task_planned_into_dag_with_one_step_escalated_and_verified(openai_server: ScriptedOpenAIServer) -> None:
    openai_server.on(competent_model)
    events: list[Event] = []
    fleet = Fleet(planner=planner_for(openai_server), registry=classic_registry(), executor="local", hooks=[events.append])
    report = await fleet.run(Task(goal=GOAL, inputs={"floor": FLOOR, "stops": [[0, 0], [4, 5], [0, 5]]}))
    await fleet.close()

    assert report.status == "succeeded", report.error
    steps = by_id(report.steps)
    leg0, leg1, route = steps["leg0"], steps["leg1"], steps["route"]
    # leg0: the greedy tier's path failed verification, the large model's path passed it.
    assert leg0.escalated and leg0.tiers_tried == ["greedy", "large"] and leg0.tier == "large"
    assert leg0.status == "verified"
    assert leg0.trials[0].verdict is not None and not leg0.trials[0].verdict.ok
    assert "shortest takes 9" in leg0.trials[0].verdict.reason
    final = leg0.trials[-1]
    assert final.attempt.worker == f"openai:{MODEL}" and final.verdict is not None and final.verdict.ok
    assert final.verdict.verifier == "maze.shortest"
    # leg1 settled at the tiny tier; the assembled route runs dock -> packing -> loading bay.
    assert leg1.tier == "greedy" and not leg1.escalated
    assert route.status == "verified"
    assert list(report.output["path"][0]) == [0, 0] and list(report.output["path"][-1]) == [0, 5]
    assert report.output["moves"] == 9 + 6
    assert any(e.kind == "escalation" and e.step_id == "leg0" and e.tier == "large" for e in events)

    # What went over the wire: a structured-output plan request listing the skills, then one
    # escalation typed by maze.route's output schema; the key only in the Authorization header.
    chats = openai_server.chat_requests()
    assert [r.schema_name for r in chats] == ["tinyfleet_plan", "maze_route"]
    assert "maze.route" in chats[0].system and "route.assemble" in chats[0].system
    assert GOAL in chats[0].last_user
    assert chats[1].response_format is not None and chats[1].response_format["json_schema"]["schema"]["required"] == ["path"]
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in chats)
    assert all(r.body is not None and r.body["model"] == MODEL for r in chats)

    # Totals match the server's usage numbers and the price table.
    t = report.totals
    assert (t.tokens_in, t.tokens_out) == openai_server.usage_totals() == (1600, 350)
    assert t.planner_calls == 1 and t.large_model_calls == 1 and t.escalated == 1
    assert t.cost_usd == pytest.approx(expected_cost(openai_server))
    assert t.cost_usd == pytest.approx((1600 * 2.5 + 350 * 10.0) / 1e6 + 2 * 0.001)
    assert report.planner == f"openai:{MODEL}"


# ---------------------------------------------------------------------------- retries


async def test_429_500_and_timeouts_are_retried_then_succeed(
    openai_server: ScriptedOpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tinyfleet.llm")
    openai_server.push(
        Fault.rate_limited(retry_after=0.2),  # honoured
        Fault.rate_limited(retry_after=60),  # capped at retry_after_cap_s=0.3
        Fault.server_error(500),
        Fault.slow(delay_s=3.0),  # past the 0.5 s timeout
    )
    openai_server.on(competent_model)
    planner = planner_for(openai_server, max_attempts=5)
    fleet = Fleet(planner=planner, registry=classic_registry(), executor="local")
    t0 = time.monotonic()
    report = await fleet.run(Task(goal=GOAL))
    elapsed = time.monotonic() - t0
    await fleet.close()

    assert report.status == "succeeded", report.error
    chats = openai_server.chat_requests()
    assert [r.answered for r in chats[:5]] == ["fault:429", "fault:429", "fault:500", "fault:504", "reply"]
    gaps = [b.at - a.at for a, b in zip(chats, chats[1:], strict=False)]
    assert gaps[0] >= 0.2  # Retry-After: 0.2
    assert 0.3 <= gaps[1] < 2.0  # Retry-After: 60, capped
    assert gaps[3] >= 0.5  # the slow reply was abandoned at the timeout
    assert elapsed < 10
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) == 4 and "HTTP 429" in retries[0] and "timed out" in retries[3]
    # The client's own retries are off: every try is one request the server saw.
    assert len(chats) == 6  # 4 faults + plan + one escalation


@pytest.mark.parametrize(
    ("fault", "overrides", "says"),
    [
        (Fault.server_error(503), {"max_attempts": 3}, "HTTP 503"),
        (Fault.slow(delay_s=5.0), {"max_attempts": 2, "timeout_s": 0.3}, "timed out"),
        (Fault.server_error(500), {"max_attempts": 20, "max_total_s": 0.4}, "HTTP 500"),
    ],
    ids=["503-forever", "timeouts-forever", "total-time-cap"],
)
async def test_endpoint_that_never_recovers_fails_clearly_in_bounded_time(
    openai_server: ScriptedOpenAIServer, fault: Fault, overrides: dict[str, Any], says: str
) -> None:
    openai_server.always(fault)
    fleet = Fleet(planner=planner_for(openai_server, **overrides), registry=classic_registry(), executor="local")
    t0 = time.monotonic()
    with pytest.raises(LLMUnavailable) as info:
        await fleet.run(Task(goal=GOAL))
    elapsed = time.monotonic() - t0
    await fleet.close()
    msg = str(info.value)
    assert says in msg and openai_server.base_url in msg and MODEL in msg
    assert "OPENAI_BASE_URL" in msg  # says what to check
    assert elapsed < 5
    tries = len(openai_server.chat_requests())
    assert re.search(rf"failed {tries} time\(s\)", msg)
    assert tries == overrides["max_attempts"] or (overrides.get("max_total_s") and 2 <= tries < 20)


async def test_unreachable_endpoint_is_retried_then_named() -> None:
    with ScriptedOpenAIServer() as gone:
        settings = settings_for(gone, max_attempts=3)
    planner = OpenAIPlanner(settings)  # the server is stopped: connections are refused
    t0 = time.monotonic()
    with pytest.raises(LLMUnavailable, match=r"failed 3 time\(s\).*connection error") as info:
        await planner.plan(Task(goal=GOAL), default_registry())
    assert time.monotonic() - t0 < 5 and settings.base_url in str(info.value)


async def test_escalation_to_a_dead_endpoint_fails_the_step_not_the_process(openai_server: ScriptedOpenAIServer) -> None:
    openai_server.push(Reply.json(ROUTE_PLAN, **PLAN_USAGE))
    openai_server.always(Fault.server_error(502))
    fleet = Fleet(planner=planner_for(openai_server, max_attempts=2), registry=classic_registry(), executor="local")
    report = await fleet.run(Task(goal=GOAL))
    await fleet.close()
    steps = by_id(report.steps)
    assert report.status == "failed"
    assert steps["leg0"].status == "failed" and steps["route"].status == "skipped"
    assert "LLMUnavailable" in (steps["leg0"].trials[-1].attempt.error or "")
    assert "HTTP 502" in (steps["leg0"].error or "")


# ---------------------------------------------------------------------------- invalid plans

CYCLIC = {
    "steps": [
        {"id": "a", "skill": "maze.route", "inputs": {"grid": LEG1}, "after": ["b"]},
        {"id": "b", "skill": "maze.route", "inputs": {"grid": LEG1}, "after": ["a"]},
    ],
    "output": "b",
}
UNKNOWN_SKILL = {"steps": [{"id": "a", "skill": "maze.teleport", "inputs": {"grid": LEG1}}], "output": "a"}
DANGLING = {"steps": [{"id": "a", "skill": "route.assemble", "inputs": {"legs": [{"$ref": "ghost.path"}]}}], "output": "a"}
MISFIT = {"steps": [{"id": "a", "skill": "maze.route", "inputs": {"grid": "S..G"}}], "output": "a"}


def validation_error(doc: dict[str, Any]) -> str:
    with pytest.raises(PlanError) as info:
        validate_plan(Plan.model_validate(doc), default_registry())
    return str(info.value)


async def test_malformed_and_invalid_plans_are_reasked_with_the_exact_error(openai_server: ScriptedOpenAIServer) -> None:
    openai_server.push(
        Reply(content='{"steps": [{"id": "a", "skill": '),  # malformed JSON
        Reply.json(CYCLIC),
        Reply.json(UNKNOWN_SKILL),
    )
    openai_server.on(competent_model)
    fleet = Fleet(planner=planner_for(openai_server, max_repairs=3), registry=classic_registry(), executor="local")
    report = await fleet.run(Task(goal=GOAL))
    await fleet.close()
    assert report.status == "succeeded", report.error
    plans = [r for r in openai_server.chat_requests() if r.schema_name == "tinyfleet_plan"]
    assert len(plans) == 4
    assert "That plan has 1 problem" in plans[1].last_user and "its JSON is broken" in plans[1].last_user
    assert validation_error(CYCLIC) in plans[2].last_user
    assert "plan has a cycle" in plans[2].last_user
    assert validation_error(UNKNOWN_SKILL) in plans[3].last_user
    # The model sees its own last plan before the correction request, and only that one: a
    # re-ask is [system, task, last plan, its problems], never the whole conversation.
    assert plans[3].messages[-2] == {"role": "assistant", "content": json.dumps(UNKNOWN_SKILL, separators=(",", ":"))}
    assert [m["role"] for m in plans[3].messages] == ["system", "user", "assistant", "user"]
    assert plans[3].messages[:2] == plans[0].messages
    assert report.totals.planner_calls == 4
    assert (report.totals.tokens_in, report.totals.tokens_out) == openai_server.usage_totals()


async def test_invalid_plans_past_the_bound_give_a_clear_plan_error(openai_server: ScriptedOpenAIServer) -> None:
    openai_server.push(Reply.json(DANGLING), Reply.json(UNKNOWN_SKILL), Reply.json(MISFIT))
    fleet = Fleet(planner=planner_for(openai_server, max_repairs=2), registry=classic_registry(), executor="local")
    with pytest.raises(ModelOutputError) as info:
        await fleet.run(Task(goal=GOAL))
    await fleet.close()
    msg = str(info.value)
    assert "gave no valid plan in 3 tries" in msg and MODEL in msg
    assert validation_error(MISFIT) in msg  # the last problem, exactly
    plans = openai_server.chat_requests()
    assert len(plans) == 3
    assert validation_error(DANGLING) in plans[1].last_user and "missing step 'ghost'" in plans[1].last_user
    assert "field 'grid'" in validation_error(MISFIT)


async def test_json_schema_rejected_falls_back_to_json_mode(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="tinyfleet.llm")
    with ScriptedOpenAIServer(json_schema_supported=False) as server:
        server.on(lambda req: Reply.json(ROUTE_PLAN) if "delivery route" in req.last_user else maze_answer(req))
        fleet = Fleet(planner=planner_for(server), registry=classic_registry(), executor="local")
        report = await fleet.run(Task(goal=GOAL))
        await fleet.close()
    assert report.status == "succeeded", report.error
    kinds = [(r.response_format or {}).get("type") for r in server.chat_requests()]
    assert kinds == ["json_schema", "json_object", "json_object"]  # the fallback is remembered
    assert any("falling back to 'json_object'" in r.getMessage() for r in caplog.records)
    assert '"steps"' in server.chat_requests()[1].system  # the schema travels in the prompt


# ---------------------------------------------------------------------------- replan and solve


async def test_replan_tells_the_model_what_failed_and_why(openai_server: ScriptedOpenAIServer) -> None:
    openai_server.on(competent_model)
    planner = planner_for(openai_server)
    old = Plan.model_validate(ROUTE_PLAN)
    bad = Attempt(output={"path": [[0, 0]]}, confidence=0.5, worker="maze.greedy", tier="greedy")
    failed = StepResult(
        step_id="leg0",
        skill="maze.route",
        status="failed",
        error="EscalationFailed: no tier gave a verified answer",
        tiers_tried=["greedy"],
        trials=[Trial(attempt=bad, verdict=Verdict(ok=False, reason="path ends at (0, 0), not at G", verifier="maze.shortest"))],
    )
    planned = await planner.replan(Task(goal=GOAL), old, [failed], default_registry())
    assert [s.id for s in planned.plan.steps] == ["leg0", "leg1", "route"]
    assert planned.cost.large_calls == 1 and planned.cost.tokens_in == 1200
    asked = openai_server.chat_requests()[0].last_user
    assert '"step":"leg0"' in asked and "path ends at (0, 0), not at G" in asked and "EscalationFailed" in asked
    assert '"previous plan' in asked.lower() or "previous plan" in asked.lower()


async def test_solve_reasks_an_answer_that_does_not_fit_the_output_model(openai_server: ScriptedOpenAIServer) -> None:
    openai_server.push(Reply.json({"route": "down then right"}))
    openai_server.on(maze_answer)
    planner = planner_for(openai_server)
    skill = maze_skill()
    step = Plan.model_validate(ROUTE_PLAN).steps[0]
    attempt = await planner.solve(step, MazeInput(grid=LEG0), skill)
    assert attempt.output is not None and len(attempt.output["path"]) == 10
    assert attempt.cost.large_calls == 2 and attempt.info["calls"] == 2
    assert "That answer is invalid: path: Field required" in openai_server.chat_requests()[1].last_user
    assert len(openai_server.chat_requests()[1].messages) == 4  # system, input, last answer, problem


# ---------------------------------------------------------------------------- budgets


@pytest.mark.parametrize(
    ("budget", "name", "solve_calls"),
    [(Budget(max_large_calls=1), "max_large_calls", 0), (Budget(max_tokens=1600), "max_tokens", 1)],
    ids=["large-calls", "tokens"],
)
async def test_budget_on_the_large_model_stops_the_run_partial(
    openai_server: ScriptedOpenAIServer, budget: Budget, name: str, solve_calls: int
) -> None:
    openai_server.on(competent_model)
    fleet = Fleet(planner=planner_for(openai_server), registry=classic_registry(), executor="local")
    report = await fleet.run(Task(goal=GOAL, budget=budget))
    await fleet.close()
    assert report.status == "partial"
    assert report.stopped_by == name and report.error is not None and name in report.error
    steps = by_id(report.steps)
    assert steps["route"].status == "skipped" and name in (steps["route"].error or "")
    assert sum(r.schema_name == "maze_route" for r in openai_server.chat_requests()) == solve_calls
    assert (report.totals.tokens_in, report.totals.tokens_out) == openai_server.usage_totals()


# ---------------------------------------------------------------------------- the key


async def test_api_key_appears_in_no_log_event_report_journal_or_exception(
    openai_server: ScriptedOpenAIServer, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    # Faults whose error bodies echo the Authorization header, as some proxies do.
    openai_server.push(Fault.server_error(500, echo_auth=True), Reply.json(ROUTE_PLAN, **PLAN_USAGE))
    openai_server.always(Fault(status=400, message="bad request", echo_auth=True))
    events: list[Event] = []
    planner = planner_for(openai_server)
    fleet = Fleet(planner=planner, registry=classic_registry(), executor="local", hooks=[events.append])
    journal = tmp_path / "run.sqlite"
    report = await fleet.run(Task(goal=GOAL), journal=journal)

    # A call that never recovers, with the key echoed in every error body.
    openai_server.always(Fault.server_error(503, echo_auth=True))
    with pytest.raises(LLMUnavailable) as info:
        await fleet.run(Task(goal=GOAL))
    await fleet.close()

    # The key was really sent, and really echoed back by the faults.
    assert openai_server.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert report.status == "failed" and "refused the request" in (by_id(report.steps)["leg0"].error or "")

    exc = info.value
    places = {
        "exception": "".join(traceback.format_exception(exc)) + repr(exc),
        "logs": "\n".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records) + caplog.text,
        "events": json.dumps([e.model_dump(mode="json") for e in events]),
        "report": report.model_dump_json(),
        "journal": journal.read_bytes().decode("latin-1"),
        "planner": repr(planner) + repr(planner.settings) + str(planner.settings) + planner.settings.model_dump_json(),
    }
    for where, text in places.items():
        assert KEY not in text, f"the API key leaked into the {where}"
        assert "S3CRETkey" not in text, f"part of the API key leaked into the {where}"
    assert exc.__cause__ is None and exc.__context__ is None
    assert "[redacted]" in places["report"] and "[redacted]" in places["exception"]


def test_missing_key_is_a_config_error_saying_what_to_set() -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAIPlanner.from_env(env={"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})
    with pytest.raises(ConfigError, match="TINYFLEET_LLM_TIMEOUT_S"):
        OpenAISettings.from_env(env={"OPENAI_API_KEY": KEY, "TINYFLEET_LLM_TIMEOUT_S": "soon"})
    s = OpenAISettings.from_env(
        env={"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": "http://h/v1", "TINYFLEET_LARGE_MODEL": "L", "TINYFLEET_SMALL_MODEL": "S"},
        large_model="override",
    )
    assert (s.base_url, s.large_model, s.small_model) == ("http://h/v1", "override", "S")
    assert KEY not in repr(s) and KEY not in s.model_dump_json()
    assert s.require_key() == KEY


# ---------------------------------------------------------------------------- small LLMs


def maze_with_llm_tier(server: ScriptedOpenAIServer, **kw: Any) -> SkillRegistry:
    maze = maze_skill()
    maze.ladder = [Tier("greedy", MazeGreedyWorker, "heuristic"), llm_tier(maze, settings=settings_for(server, **kw), prices=PRICES)]
    return SkillRegistry([maze, route_skill(), sudoku_skill()])


RUN_SEED = 1234


async def test_small_llm_tier_answers_as_particles(openai_server: ScriptedOpenAIServer) -> None:
    greedy_path = [[0, 0], [0, 1], [0, 2], [0, 3], [0, 4], [0, 5], [1, 5], [2, 5], [2, 4], [3, 4], [4, 4], [4, 5]]
    # With a run seed, particle k of step "main" gets particle_seed(seed, that job): particle 0's
    # sample is the greedy (too long) path here, the others the shortest.
    seeds = [particle_seed(RUN_SEED, "main", k) for k in range(3)]

    def particles(req: RecordedRequest) -> Reply:
        seed = (req.body or {}).get("seed")
        if seed == seeds[0]:
            return Reply.json({"path": greedy_path}, prompt_tokens=300, completion_tokens=60)
        return Reply.json({"path": [list(c) for c in bfs_path(step_input(req)["grid"])]}, prompt_tokens=300, completion_tokens=50)

    openai_server.on(particles)
    registry = maze_with_llm_tier(openai_server, seed=RUN_SEED)
    fleet = Fleet(planner=RulePlanner(Strategy(particles=3)), registry=registry, executor="local")
    report = await fleet.run(Task(skill="maze.route", inputs={"grid": LEG0}))
    await fleet.close()

    assert report.status == "succeeded", report.error
    step = report.steps[0]
    assert step.tier == "llm-small" and step.tiers_tried == ["greedy", "llm-small"]
    llm = [t for t in step.trials if t.attempt.tier == "llm-small"]
    assert sorted(t.attempt.particle for t in llm) == [0, 1, 2]
    assert [t.verdict.ok for t in sorted(llm, key=lambda t: t.attempt.particle) if t.verdict] == [False, True, True]
    assert [t.attempt.confidence for t in llm if t.verdict and t.verdict.ok] == pytest.approx([2 / 3, 2 / 3])
    chats = openai_server.chat_requests()
    assert sorted((r.body or {})["seed"] for r in chats) == sorted(seeds) and len(set(seeds)) == 3
    assert all((r.body or {})["temperature"] > 0 and (r.body or {})["model"] == "small-test-model" for r in chats)
    assert all(r.schema_name == "maze_route" for r in chats)
    t = report.totals
    assert (t.tokens_in, t.tokens_out) == openai_server.usage_totals() == (900, 160)
    assert t.large_model_calls == 0 and t.cost_usd == pytest.approx(expected_cost(openai_server))


class NoteInput(BaseModel):
    text: str


class NoteOutput(BaseModel):
    summary: str


async def test_llm_judge_rules_on_what_nothing_else_can_check(openai_server: ScriptedOpenAIServer) -> None:
    def model(req: RecordedRequest) -> Reply:
        if req.schema_name == "judgement":
            assert "Answer (JSON)" in req.last_user
            return Reply.json({"ok": True, "confidence": 0.9, "reason": "faithful and short"})
        return Reply.json({"summary": "Shipments leave at dawn."})

    openai_server.on(model)
    skill = Skill(
        name="note.summarize",
        description="Summarize a note in one sentence. Input {'text': str}.",
        input_model=NoteInput,
        output_model=NoteOutput,
        verifier=LLMJudgeVerifier("Summarize the note in one sentence", settings=settings_for(openai_server)),
    )
    skill.ladder = [llm_tier(skill, settings=settings_for(openai_server))]
    fleet = Fleet(planner=RulePlanner(), registry=SkillRegistry([skill]), executor="local", policy=Policy(final="none"))
    report = await fleet.run(Task(skill="note.summarize", inputs={"text": "All shipments leave at dawn, every day."}))
    await fleet.close()
    assert report.status == "succeeded", report.error
    verdict = report.steps[0].trials[0].verdict
    assert verdict is not None and verdict.ok and verdict.judgement and verdict.score == pytest.approx(0.9)
    assert verdict.verifier == "llm.judge" and verdict.details["tokens_in"] == 100
    assert report.output == {"summary": "Shipments leave at dawn."}


async def test_small_llm_seeds_are_drawn_per_run_unless_a_seed_is_given(openai_server: ScriptedOpenAIServer) -> None:
    openai_server.on(maze_answer)

    async def seeds_of_one_run(**kw: Any) -> list[int]:
        before = len(openai_server.chat_requests())
        maze = maze_skill()
        maze.ladder = [llm_tier(maze, settings=settings_for(openai_server, **kw))]
        fleet = Fleet(planner=RulePlanner(Strategy(particles=3)), registry=SkillRegistry([maze]), executor="local")
        report = await fleet.run(Task(skill="maze.route", inputs={"grid": LEG0}))
        await fleet.close()
        assert report.status == "succeeded", report.error
        return sorted(int((r.body or {})["seed"]) for r in openai_server.chat_requests()[before:])

    drawn = [await seeds_of_one_run() for _ in range(2)]
    fixed = [await seeds_of_one_run(seed=7) for _ in range(2)]
    assert all(len(set(s)) == 3 for s in drawn + fixed)
    assert drawn[0] != drawn[1]  # two runs sample differently (2**31 seeds each: a collision is ~1e-9)
    assert fixed[0] == fixed[1] and fixed[0] != drawn[0]
    assert OpenAISettings.from_env(env={"TINYFLEET_SEED": "7"}).seed == 7


def test_small_llm_worker_is_cheap_to_build_without_settings() -> None:
    # `tinyfleet skills` instantiates tier workers to name them: no key, no network needed.
    w = llm_tier(sudoku_skill()).worker()
    assert isinstance(w, SmallLLMWorker) and w.name == "llm.small" and w.stochastic


# ---------------------------------------------------------------------------- an injected HTTP client
#
# The network edge replaced by an httpx2 transport (the HTTP library the openai client is built
# on): no socket, no server thread. What runs is still the real openai client, the planner's
# parsing and repairs, the retries and the billing.

NOWHERE = "http://model.invalid/v1"  # never resolved: the transport answers every request
GATEWAY_KEY = "gw-" + "G4TEWAYsecret" * 2


def _completion_body(model: str, content: str, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-injected", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


class TransportModel:
    """A scripted model behind an ``httpx2.MockTransport``: a queue of (status, body, headers)
    answers first, then ``competent_model``; every request recorded with its JSON body."""

    def __init__(self, *queued: tuple[int, dict[str, Any], dict[str, str]]) -> None:
        self.queue = list(queued)
        self.seen: list[tuple[Any, dict[str, Any]]] = []
        self.usage: list[tuple[str, int, int]] = []

    def __call__(self, request: Any) -> Any:
        import httpx2

        body = json.loads(request.content)
        self.seen.append((request, body))
        if self.queue:
            status, doc, headers = self.queue.pop(0)
            if status == 200:
                self.usage.append((body["model"], doc["usage"]["prompt_tokens"], doc["usage"]["completion_tokens"]))
            return httpx2.Response(status, json=doc, headers=headers)
        rec = RecordedRequest("POST", request.url.path, dict(request.headers), request.content.decode(), body)
        reply = competent_model(rec)
        self.usage.append((body["model"], reply.prompt_tokens, reply.completion_tokens))
        doc = _completion_body(body["model"], str(reply.content), reply.prompt_tokens, reply.completion_tokens)
        return httpx2.Response(200, json=doc)

    def schema_names(self) -> list[str | None]:
        return [((b.get("response_format") or {}).get("json_schema") or {}).get("name") for _, b in self.seen]


def injected_settings(**kw: Any) -> OpenAISettings:
    base: dict[str, Any] = {"api_key": KEY, "base_url": NOWHERE, "large_model": MODEL, "timeout_s": 2.0,
                            "max_attempts": 3, "backoff_initial_s": 0.01, "backoff_max_s": 0.05, "retry_after_cap_s": 0.1}
    return OpenAISettings(**(base | kw))


async def test_planner_runs_end_to_end_through_an_injected_transport() -> None:
    import httpx2

    rate_limited = {"error": {"message": "slow down", "type": "rate_limit_error", "param": None, "code": None}}
    model = TransportModel(
        (429, rate_limited, {"Retry-After": "0"}),  # retried by the client's own back-off
        (200, _completion_body(MODEL, json.dumps(UNKNOWN_SKILL), 900, 120), {}),  # re-asked by the planner
    )
    planner = OpenAIPlanner(injected_settings(), prices=PRICES, transport=httpx2.MockTransport(model))
    fleet = Fleet(planner=planner, registry=classic_registry(), executor="local")
    report = await fleet.run(Task(goal=GOAL))
    await fleet.close()

    assert report.status == "succeeded", report.error
    assert list(report.output["path"][0]) == [0, 0] and list(report.output["path"][-1]) == [0, 5]
    # 429 (retried), the unknown skill (repaired), the good plan, the escalation of leg0
    assert model.schema_names() == ["tinyfleet_plan", "tinyfleet_plan", "tinyfleet_plan", "maze_route"]
    repair = model.seen[2][1]["messages"]
    assert validation_error(UNKNOWN_SKILL) in repair[-1]["content"]
    assert repair[-2] == {"role": "assistant", "content": json.dumps(UNKNOWN_SKILL, separators=(",", ":"))}
    assert all(req.url.host == "model.invalid" and req.headers["authorization"] == f"Bearer {KEY}" for req, _ in model.seen)
    # billing: the usage of the three answered calls, priced by the table (the 429 costs nothing)
    t = report.totals
    assert (t.tokens_in, t.tokens_out) == (900 + 1200 + 400, 120 + 300 + 50)
    assert t.planner_calls == 2 and t.large_model_calls == 1
    assert t.cost_usd == pytest.approx(sum(PRICES.price(m).cost(i, o) for m, i, o in model.usage))


async def test_injected_client_headers_never_leak_into_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    import httpx2

    caplog.set_level(logging.DEBUG)

    def echo_headers(request: httpx2.Request) -> httpx2.Response:  # a proxy that quotes what it got
        said = "; ".join(f"{k}: {v}" for k, v in request.headers.items())
        status = 500 if len(seen) < 2 else 400
        seen.append(request)
        return httpx2.Response(status, json={"error": {"message": f"upstream failed, request headers: {said}",
                                                       "type": "server_error", "param": None, "code": None}})

    seen: list[httpx2.Request] = []
    client = httpx2.AsyncClient(transport=httpx2.MockTransport(echo_headers), headers={"X-Gateway-Key": GATEWAY_KEY})
    planner = OpenAIPlanner(injected_settings(), prices=PRICES, http_client=client)
    with pytest.raises(LLMRequestError) as info:
        await planner.plan(Task(goal=GOAL), default_registry())
    await planner.aclose()

    # Both secrets were really sent through the injected client, and echoed back.
    assert len(seen) == 3
    assert all(r.headers["x-gateway-key"] == GATEWAY_KEY and r.headers["authorization"] == f"Bearer {KEY}" for r in seen)
    exc = info.value
    places = {
        "exception": "".join(traceback.format_exception(exc)) + repr(exc),
        "logs": "\n".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records) + caplog.text,
        "planner": repr(planner) + repr(planner.chat),
    }
    for where, text in places.items():
        for secret, part in ((KEY, "S3CRETkey"), (GATEWAY_KEY, "G4TEWAYsecret")):
            assert secret not in text and part not in text, f"a secret leaked into the {where}"
    assert "[redacted]" in places["exception"] and "retrying in" in places["logs"]
    assert exc.__cause__ is None and exc.__context__ is None
    # The injected client is the caller's: the planner did not close it.
    assert not client.is_closed
    await client.aclose()


def test_an_http_client_the_async_planner_cannot_use_is_a_config_error() -> None:
    import httpx2

    with httpx2.Client() as sync_client, pytest.raises(ConfigError, match="async HTTP client"):
        OpenAIPlanner(injected_settings(), http_client=sync_client)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="not both"):
        OpenAIPlanner(injected_settings(), http_client=httpx2.AsyncClient(), transport=httpx2.MockTransport(lambda r: None))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="async HTTP transport"):
        OpenAIPlanner(injected_settings(), transport=httpx2.HTTPTransport())  # type: ignore[arg-type]
