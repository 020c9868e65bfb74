"""Model output as real servers send it, over real HTTP (``ScriptedOpenAIServer`` on 127.0.0.1
and the real ``openai`` client): prose around the JSON, fences, ``<think>`` blocks,
``reasoning_content``, several JSON objects, no JSON at all (exit 1 with an excerpt); plans
by ``$input`` reference; every problem of a plan in one re-ask; strict schemas; context
limits; prices. The parser itself is also run on a corpus of real-looking replies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from openai_server import (  # noqa: F401
    Fault,
    RecordedRequest,
    Reply,
    ScriptedOpenAIServer,
    openai_server,
)

from orchestrator import Fleet, Plan, PlanError, Task, validate_plan
from planners.openai import OpenAIPlanner
from planners.plan_problems import plan_problems
from planners.strict_schema import strict_plan_schema, strict_violations
from tinyfleet.cli import main
from tinyfleet_core.errors import ModelOutputError
from tinyfleet_core.prices import Price, PriceTable
from tinyfleet_core.refs import expand_task_inputs, resolve_references
from workers.builtin import default_registry, maze_skill
from workers.kits.maze import MazeInput, MazeOutput, bfs_path, with_endpoints
from workers.llm.client import ContextTooLong, OpenAISettings
from workers.llm.followers import LLMJudgeVerifier, SmallLLMWorker
from workers.llm.prices import BUILTIN_PRICES, load_price_table, model_price
from workers.llm.reply_parsing import ModelReply, ReplyError, read_json_reply

KEY = "sk-tinyfleet-replies-" + "Zq8pW" * 4
MODEL = "big-test-model"
FLOOR = ["......", "......", "...#..", ".#...#", "......"]
LEG = with_endpoints(FLOOR, (4, 5), (0, 5))
PLAN = {"steps": [{"id": "leg", "skill": "maze.route", "inputs": {"grid": LEG}}], "output": "leg"}
PLAN_JSON = json.dumps(PLAN)


def settings_for(server: ScriptedOpenAIServer, **kw: Any) -> OpenAISettings:
    base: dict[str, Any] = {
        "api_key": KEY, "base_url": server.base_url, "large_model": MODEL, "small_model": "small-test-model",
        "timeout_s": 2.0, "max_attempts": 2, "backoff_initial_s": 0.01, "backoff_max_s": 0.02,
    }
    base.update(kw)
    return OpenAISettings(**base)


def planner_for(server: ScriptedOpenAIServer, **kw: Any) -> OpenAIPlanner:
    return OpenAIPlanner(settings_for(server, **kw), prices=PriceTable())


def fits_plan(value: Any) -> Plan:
    plan = Plan.model_validate(value)
    validate_plan(plan, default_registry())
    return plan


# ---------------------------------------------------------------------------- the parser on a corpus

OTHER = {"steps": [{"id": "x", "skill": "maze.route", "inputs": {"grid": ["S#", "#G"]}}], "output": "x"}
CORPUS = [
    ("bare", PLAN_JSON),
    ("fenced", f"```json\n{PLAN_JSON}\n```"),
    ("ollama-prose", f"Sure! Here is the plan you asked for:\n\n{PLAN_JSON}\n\nLet me know if you need changes."),
    ("prose-then-fence", f"I split the route into one leg.\n```\n{json.dumps(PLAN, indent=2)}\n```\nDone."),
    ("fence-without-newline", f"Plan: ```json {PLAN_JSON}```"),
    ("think", f"<think>The user wants a route. {{not json}} Let me plan one leg.</think>\n{PLAN_JSON}"),
    ("lone-close-think", f"The grid is small, one leg will do.</think>\n\n{PLAN_JSON}"),
    ("braces-in-prose", f"The plan {{as requested}} uses {{one}} step: {PLAN_JSON}"),
    ("brace-inside-string", '{"note": "a } and a { inside", "draft": true} then ' + PLAN_JSON),
    ("two-objects-first-invalid", f'First draft: {{"steps": [], "output": "leg"}}\nFixed: {PLAN_JSON}'),
    ("json-array-then-object", f"[1, 2, 3] and then {PLAN_JSON}"),
    ("unicode-prose", f"Voilà — le plan : {PLAN_JSON} ✓"),
]


@pytest.mark.parametrize(("name", "text"), CORPUS, ids=[c[0] for c in CORPUS])
def test_the_plan_is_found_in_every_real_looking_reply(name: str, text: str) -> None:
    plan = read_json_reply(text, fits_plan)
    assert plan.steps[0].id == "leg" and plan.steps[0].inputs["grid"] == LEG


def test_reasoning_is_read_only_when_the_content_is_empty_and_its_last_fit_wins() -> None:
    reasoning = f"A first idea: {json.dumps(OTHER)}. No, better: {PLAN_JSON}"
    assert read_json_reply(ModelReply("", reasoning), fits_plan).steps[0].id == "leg"
    # an unclosed <think> (the reply stopped while reasoning): its JSON is the answer
    assert read_json_reply(ModelReply(f"<think>planning... {PLAN_JSON}"), fits_plan).steps[0].id == "leg"
    # content that says something wins over the reasoning, even when the reasoning fits
    with pytest.raises(ReplyError, match="holds no JSON object"):
        read_json_reply(ModelReply("I cannot do that.", PLAN_JSON), fits_plan)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "the reply is empty"),
        ("I am sorry, I can't produce a plan for this.", "holds no JSON object"),
        ('{"steps": [{"id": "leg", "skill": ', "its JSON is broken"),
        ('{"steps": [], "output": "leg"}', "plan has no steps"),
        ('{"a": 1} and {"b": 2}', "none of the 2 JSON values"),
    ],
    ids=["empty", "prose-only", "truncated", "one-invalid", "two-invalid"],
)
def test_a_reply_with_no_fitting_json_says_why_and_quotes_it(text: str, says: str) -> None:
    with pytest.raises(ReplyError) as info:
        read_json_reply(text, fits_plan)
    msg = str(info.value)
    assert says in msg
    if text:
        assert f'the reply began: "{text[:20]}' in msg


def test_a_long_reply_is_quoted_short() -> None:
    text = "Let me think about this problem very carefully. " * 40
    with pytest.raises(ReplyError) as info:
        read_json_reply(text, fits_plan)
    assert len(str(info.value)) < 320 and " ... " in str(info.value)


# ---------------------------------------------------------------------------- over HTTP: plans

HTTP_REPLIES = {
    "prose+json": Reply(content=f"Here is the plan:\n{PLAN_JSON}\nHope this helps!"),
    "fenced-after-prose": Reply(content=f"Sure.\n\n```json\n{PLAN_JSON}\n```"),
    "think+json": Reply(content=f"<think>\nOne leg from the station to the bay.\n</think>\n\n{PLAN_JSON}"),
    "reasoning-content-only": Reply(content=None, reasoning=f"The plan is:\n{PLAN_JSON}"),
    "two-objects-second-fits": Reply(content=f'{{"plan": "one leg"}}\n{PLAN_JSON}'),
}


@pytest.mark.parametrize("kind", list(HTTP_REPLIES), ids=list(HTTP_REPLIES))
async def test_planner_reads_the_plan_in_the_first_reply(openai_server: ScriptedOpenAIServer, kind: str) -> None:
    openai_server.push(HTTP_REPLIES[kind])
    planner = planner_for(openai_server)
    planned = await planner.plan(Task(goal="route the leg"), default_registry())
    await planner.aclose()
    assert planned.plan.steps[0].inputs["grid"] == LEG
    assert len(openai_server.chat_requests()) == 1 and planned.cost.large_calls == 1


async def test_a_reply_with_no_json_past_every_reask_is_a_model_output_error(openai_server: ScriptedOpenAIServer) -> None:
    openai_server.always(Reply(content="I'm sorry, as an AI model I cannot plan warehouse routes."))
    planner = planner_for(openai_server, max_repairs=1)
    with pytest.raises(ModelOutputError) as info:
        await planner.plan(Task(goal="route the leg"), default_registry())
    await planner.aclose()
    msg = str(info.value)
    assert "gave no valid plan in 2 tries" in msg and "holds no JSON object" in msg
    assert '"I\'m sorry, as an AI model I cannot plan' in msg  # the excerpt
    assert isinstance(info.value, PlanError)  # still a plan error for callers that catch those


def test_cli_exits_1_when_the_model_gives_no_plan_and_2_for_the_users_bad_task(
    openai_server: ScriptedOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    openai_server.always(Reply(content="<think>hmm</think>Sorry, no plan today."))
    for var, value in {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": openai_server.base_url, "TINYFLEET_LARGE_MODEL": MODEL,
                       "TINYFLEET_LLM_TIMEOUT_S": "2"}.items():
        monkeypatch.setenv(var, value)
    task = tmp_path / "task.json"
    task.write_text(json.dumps({"goal": "route the leg", "inputs": {"grid": LEG}}))
    rc = main(["run", str(task), "--planner", "openai", "--executor", "local", "--journal", str(tmp_path / "j.sqlite")])
    err = capsys.readouterr().err
    assert rc == 1
    assert "gave no valid plan" in err and 'the reply began: "<think>hmm</think>Sorry, no plan today."' in err
    assert KEY not in err and len(err.strip().splitlines()) == 1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"skill": "maze.teleport", "inputs": {"grid": LEG}}))
    assert main(["run", str(bad), "--executor", "local", "--journal", str(tmp_path / "k.sqlite")]) == 2
    assert "unknown skill 'maze.teleport'" in capsys.readouterr().err


# ---------------------------------------------------------------------------- over HTTP: answers


async def test_solve_judge_and_small_model_read_wrapped_json(openai_server: ScriptedOpenAIServer) -> None:
    path = [list(c) for c in bfs_path(LEG)]
    planner = planner_for(openai_server)
    openai_server.push(Reply(content=f"<think>BFS from S.</think>The shortest path is:\n```json\n{json.dumps({'path': path})}\n```"))
    attempt = await planner.solve(Plan.model_validate(PLAN).steps[0], MazeInput(grid=LEG), maze_skill())
    await planner.aclose()
    assert attempt.output == {"path": path} and attempt.info["calls"] == 1

    openai_server.push(Reply(content=None, reasoning='Checking... {"ok": true, "confidence": 0.9, "reason": "shortest"}'))
    judge = LLMJudgeVerifier("route", settings=settings_for(openai_server))
    verdict = judge.check_batch([(MazeInput(grid=LEG), MazeOutput(path=[tuple(c) for c in path]))])[0]
    assert verdict.ok and verdict.score == pytest.approx(0.9)

    openai_server.push(Reply(content=f"Answer: {json.dumps({'path': path})} (shortest)"), Reply(content="no idea"))
    from workers.base import Job

    worker = SmallLLMWorker("maze.route", "route", MazeOutput, settings=settings_for(openai_server, seed=1))
    a, b = worker.solve_batch([Job(MazeInput(grid=LEG), particle=0, key="s"), Job(MazeInput(grid=LEG), particle=1, key="s")])
    got = sorted([a, b], key=lambda x: x.output is None)
    assert got[0].output == {"path": path}
    assert got[1].output is None and "holds no JSON object" in (got[1].error or "") and '"no idea"' in (got[1].error or "")


# ---------------------------------------------------------------------------- re-asks

TWO_PROBLEMS = {
    "steps": [
        {"id": "a", "skill": "maze.route", "inputs": {"grid": "S..G"}},
        {"id": "b", "skill": "route.assemble", "inputs": {"legs": [{"$ref": "ghost.path"}]}},
        {"id": "c", "skill": "maze.teleport", "inputs": {}},
    ],
    "output": "b",
}
FIXED = {
    "steps": [
        {"id": "a", "skill": "maze.route", "inputs": {"grid": LEG}},
        {"id": "b", "skill": "route.assemble", "inputs": {"legs": [{"$ref": "a.path"}]}},
    ],
    "output": "b",
}


def test_plan_problems_lists_every_problem_with_the_run_loops_words() -> None:
    reg = default_registry()
    problems = plan_problems(Plan.model_validate(TWO_PROBLEMS), reg)
    assert len(problems) == 3
    assert "step 'a' (maze.route) input: field 'grid'" in problems[0]
    assert problems[1] == "step 'b' references missing step 'ghost'"
    assert problems[2].startswith("step 'c': unknown skill 'maze.teleport'")
    # the first one is exactly what validate_plan raises
    with pytest.raises(PlanError) as info:
        validate_plan(Plan.model_validate(TWO_PROBLEMS), reg)
    assert str(info.value) == problems[0]
    assert plan_problems(Plan.model_validate(FIXED), reg) == []


async def test_a_plan_with_several_problems_is_fixed_in_one_reask(openai_server: ScriptedOpenAIServer) -> None:
    openai_server.push(Reply.json(TWO_PROBLEMS), Reply.json(FIXED))
    planner = planner_for(openai_server)
    planned = await planner.plan(Task(goal="route the leg"), default_registry())
    await planner.aclose()
    assert [s.id for s in planned.plan.steps] == ["a", "b"]
    chats = openai_server.chat_requests()
    assert len(chats) == 2  # three problems, one re-ask
    ask = chats[1].last_user
    assert "That plan has 3 problems; fix all of them at once" in ask
    assert "field 'grid'" in ask and "missing step 'ghost'" in ask and "unknown skill 'maze.teleport'" in ask
    # the re-ask carries the task and the last plan only, never the whole conversation
    assert [m["role"] for m in chats[1].messages] == ["system", "user", "assistant", "user"]
    assert json.loads(chats[1].messages[2]["content"]) == TWO_PROBLEMS


async def test_reask_stays_within_its_token_budget(openai_server: ScriptedOpenAIServer) -> None:
    huge = {"steps": [{"id": f"s{k}", "skill": "maze.route", "inputs": {"grid": "x" * 50}} for k in range(200)], "output": "s0"}
    openai_server.push(Reply.json(huge), Reply.json(huge), Reply.json(FIXED))
    planner = planner_for(openai_server, repair_budget_tokens=500)
    await planner.plan(Task(goal="route"), default_registry())
    await planner.aclose()
    sizes = [len(json.dumps(r.messages[2:])) for r in openai_server.chat_requests()[1:]]
    assert all(n <= 500 * 4 + 200 for n in sizes)
    ask = openai_server.chat_requests()[1].last_user
    assert "too long to show again" in ask and "more problem(s)" in ask


# ---------------------------------------------------------------------------- plans by reference


def test_input_references_resolve_validate_and_name_a_bad_path() -> None:
    inputs = {"legs": {"north": {"grid": LEG}}, "all": [LEG]}
    plan = Plan.model_validate(
        {"steps": [{"id": "a", "skill": "maze.route", "inputs": {"grid": {"$input": "legs.north.grid"}}},
                   {"id": "b", "skill": "maze.route", "inputs": {"grid": {"$input": "all.0"}}}], "output": ["a", "b"]}
    )
    validated = validate_plan(plan, default_registry(), task_inputs=inputs)
    assert validated["a"].grid == LEG and validated["b"].grid == LEG  # type: ignore[attr-defined]
    assert expand_task_inputs(plan.steps, inputs)[0].inputs == {"grid": LEG}
    bad = Plan.model_validate({"steps": [{"id": "a", "skill": "maze.route", "inputs": {"grid": {"$input": "legs.south.grid"}}}], "output": "a"})
    with pytest.raises(PlanError, match=r"step 'a': reference 'legs.south.grid': the task's inputs has no field 'south' \(it has 'north'\)"):
        validate_plan(bad, default_registry(), task_inputs=inputs)
    assert resolve_references({"x": [{"$ref": "a.path"}, {"$input": "all.0"}]}, {"a": {"path": [1]}}, inputs) == {"x": [[1], LEG]}


async def test_a_plan_by_reference_runs_on_the_fleet(openai_server: ScriptedOpenAIServer) -> None:
    grid = with_endpoints(FLOOR, (0, 0), (4, 5))
    plan = {"steps": [{"id": "leg", "skill": "maze.route", "inputs": {"grid": {"$input": "floors.1"}}}], "output": "leg.path"}
    openai_server.push(Reply.json(plan))
    openai_server.on(lambda req: Reply.json({"path": [list(c) for c in bfs_path(grid)]}))
    fleet = Fleet(planner=planner_for(openai_server), executor="local")
    report = await fleet.run(Task(goal="route floor 1", inputs={"floors": [LEG, grid]}))
    await fleet.close()
    assert report.status == "succeeded", report.error
    assert [tuple(c) for c in report.output] == bfs_path(grid)
    prompt = openai_server.chat_requests()[0].last_user
    assert '{"$input": "<path>"}' in prompt and 'Task inputs (JSON): {"floors":' in prompt  # small: shown whole


# ---------------------------------------------------------------------------- strict schemas


def test_strict_plan_schema_follows_the_strict_rules_and_accepts_plans_by_reference() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = strict_plan_schema(default_registry())
    assert schema is not None and strict_violations(schema) == []
    jsonschema.Draft202012Validator.check_schema(schema)
    ok = {"steps": [{"id": "a", "skill": "maze.route", "inputs": {"grid": {"$input": "grid"}}, "after": []},
                    {"id": "b", "skill": "route.assemble", "inputs": {"legs": [{"$ref": "a.path"}]}, "after": []}],
          "output": "b"}
    jsonschema.validate(ok, schema)
    for wrong in (
        {**ok, "extra": 1},
        {"steps": [{"id": "a", "skill": "maze.route", "inputs": {"grid": LEG, "size": 3}, "after": []}], "output": "a"},
        {"steps": [{"id": "a", "skill": "maze.route", "inputs": {"legs": []}, "after": []}], "output": "a"},
        {"steps": [{"id": "a", "skill": "maze.route", "inputs": {"grid": LEG}}], "output": "a"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(wrong, schema)
    # the plain Plan schema is not strict: free-form inputs, optional fields
    assert strict_violations(Plan.model_json_schema())


async def test_strict_schema_is_sent_and_a_server_that_refuses_it_gets_the_plain_one() -> None:
    forecast = {"steps": [{"id": "f", "skill": "series.forecast",
                           "inputs": {"values": {"$input": "v"}, "timestamps": None, "horizon": 3, "season": None},
                           "after": []}], "output": "f"}
    with ScriptedOpenAIServer() as server:
        server.push(Reply.json(forecast))
        planner = planner_for(server, response_format="json_schema_strict")
        planned = await planner.plan(Task(goal="forecast", inputs={"v": [float(k % 5) for k in range(60)]}), default_registry())
        await planner.aclose()
    rf = server.chat_requests()[0].response_format or {}
    assert rf["json_schema"]["strict"] is True and strict_violations(rf["json_schema"]["schema"]) == []
    step = planned.plan.steps[0]
    # strict mode makes the model write null for optional fields; their defaults apply
    assert step.inputs == {"values": {"$input": "v"}, "horizon": 3}
    with ScriptedOpenAIServer(strict_supported=False) as server:
        server.push(Reply.json(PLAN))
        planner = planner_for(server, response_format="json_schema_strict")
        await planner.plan(Task(goal="route"), default_registry())
        await planner.aclose()
    sent = [((r.response_format or {}).get("json_schema") or {}).get("strict") for r in server.chat_requests()]
    assert sent == [True, False] and planner.chat.format == "json_schema"
    auto = OpenAIPlanner(OpenAISettings(api_key=KEY, base_url="https://api.openai.com/v1"))
    assert auto.chat.format == "json_schema_strict"


# ---------------------------------------------------------------------------- context limits


async def test_a_context_limit_shrinks_the_prompt_then_says_what_did_not_fit() -> None:
    task = Task(goal="forecast", inputs={"v": [float(k % 7) for k in range(500)], "names": [f"n{k}" for k in range(40)]})
    with ScriptedOpenAIServer(count_usage=True) as server:
        server.always(Reply.json(PLAN))
        planner = planner_for(server)
        await planner.plan(task, default_registry())
        full = server.usage[0][1]
    with ScriptedOpenAIServer(count_usage=True, context_limit=full - 1) as server:
        server.always(Reply.json(PLAN))
        planner = planner_for(server)
        planned = await planner.plan(task, default_registry())
        await planner.aclose()
        answered = [r.answered for r in server.chat_requests()]
    assert answered[0] == "fault:400" and answered[-1] == "reply" and planned.plan.steps[0].id == "leg"
    with ScriptedOpenAIServer(count_usage=True, context_limit=50) as server:
        planner = planner_for(server)
        with pytest.raises(ContextTooLong) as info:
            await planner.plan(task, default_registry())
        await planner.aclose()
    msg = str(info.value)
    assert "even the smallest prompt does not fit" in msg and "50 tokens" in msg and "skills" in msg and "chars" in msg
    assert info.value.limit == 50 and len(server.chat_requests()) == 3


# ---------------------------------------------------------------------------- prices


def test_builtin_prices_price_common_models_and_can_be_overridden(tmp_path: Path) -> None:
    table = load_price_table(env={})
    assert model_price(table, "gpt-4o") == BUILTIN_PRICES["gpt-4o"] == Price(per_mtok_in=2.5, per_mtok_out=10.0)
    assert model_price(table, "gpt-4o-2024-08-06") == BUILTIN_PRICES["gpt-4o"]
    assert model_price(table, "openai/gpt-4o-mini") == BUILTIN_PRICES["gpt-4o-mini"]
    assert model_price(table, "qwen3:8b") == Price()  # a local model is free unless priced
    override = tmp_path / "prices.json"
    override.write_text(json.dumps({"models": {"gpt-4o": {"per_mtok_in": 1.0, "per_mtok_out": 2.0}, "qwen3:8b": {"per_call": 0.01}}}))
    mine = load_price_table(env={"TINYFLEET_PRICES": str(override)})
    assert model_price(mine, "gpt-4o").per_mtok_in == 1.0 and model_price(mine, "qwen3:8b").per_call == 0.01
    assert model_price(mine, "gpt-4.1") == BUILTIN_PRICES["gpt-4.1"]
    from tinyfleet_core.errors import ConfigError

    override.write_text("{nope")
    with pytest.raises(ConfigError, match="TINYFLEET_PRICES"):
        load_price_table(env={"TINYFLEET_PRICES": str(override)})


async def test_a_gpt_4o_plan_costs_its_list_price() -> None:
    with ScriptedOpenAIServer() as server:
        server.push(Reply.json(PLAN, prompt_tokens=1000, completion_tokens=200))
        planner = OpenAIPlanner(settings_for(server, large_model="gpt-4o"))  # no price table given
        planned = await planner.plan(Task(goal="route"), default_registry())
        await planner.aclose()
    assert planned.cost.cost_usd == pytest.approx((1000 * 2.5 + 200 * 10.0) / 1e6)


def test_the_coding_agent_adopts_a_plan_that_passes_the_spec_by_reference() -> None:
    import sys

    root = Path(__file__).resolve().parents[1]
    if str(root) not in sys.path:  # the examples live beside the packages
        sys.path.insert(0, str(root))
    from tinyfleet.examples.coding_agent import adopt_plan, load_spec, spec_plan

    spec = load_spec(root / "examples" / "coding_agent" / "specs" / "textstats.py")
    literal = spec_plan(spec)
    doc = literal.model_dump(mode="json", exclude_defaults=True)
    for k, step in enumerate(doc["steps"][:-1]):  # every function step reads its spec by reference
        for field in ("signature", "doc", "tests"):
            step["inputs"][field] = {"$input": f"spec.functions.{k}.{field}"}
    adopted = adopt_plan(spec, Plan.model_validate(doc))
    assert [s.id for s in adopted.steps] == [s.id for s in literal.steps]
    assert adopted.steps[0].inputs["tests"] == spec.functions[0].tests
    doc["steps"][0]["inputs"]["tests"] = {"$input": "spec.functions.1.tests"}  # another function's tests
    with pytest.raises(PlanError, match="does not carry the spec's tests"):
        adopt_plan(spec, Plan.model_validate(doc))
