"""The benchmark harness and its parts on tiny sizes. Speed claims live in ``tinyfleet bench``,
not here: these tests check structure (row names and fields), that the simulated large model
answers wrongly at its stated rates with answers the skills' verifiers reject, that its token
counts come from the real prompt the planner sends, and what each benchmark compares."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tinyfleet.bench import (
    BENCHMARKS,
    bench_command,
    markdown,
    run_benchmarks,
    write_results,
)
from tinyfleet.bench.escalation import ROWS, exact_answer, prices, workload
from tinyfleet.bench.simulated_llm import (
    GPT4O_CLASS,
    SimConfig,
    category,
    count_prompt_tokens,
    count_tokens,
    respond,
)
from tinyfleet.bench.stub_server import BenchStubServer
from tinyfleet_core.errors import InputError
from tinyfleet_core.models import Step
from workers.builtin import default_registry
from workers.kits import maze, sudoku

ROW_FIELDS = ("name", "verified_share", "large_calls", "tokens_in", "tokens_out", "cost_usd", "cpu_seconds", "wall_s")


def _check_shape(res: dict[str, Any]) -> None:
    assert isinstance(res["summary"], str) and res["summary"]
    assert isinstance(res["ok"], bool)
    assert isinstance(res["rows"], list)
    for row in res["rows"]:
        assert isinstance(row, dict) and row
    json.dumps(res)  # JSON-serialisable


def _body(inp: dict[str, Any]) -> dict[str, Any]:
    return {"model": GPT4O_CLASS.name, "messages": [{"role": "system", "content": "solve"},
                                                    {"role": "user", "content": "Step 's1' input (JSON): " + json.dumps(inp)}]}


def _forecast_input() -> dict[str, Any]:
    t = np.arange(120)
    return {"values": (10 + 3 * np.sin(2 * np.pi * t / 12)).round(3).tolist(), "horizon": 12, "season": 12}


def _verdict(skill: str, inp: dict[str, Any], out: dict[str, Any]) -> tuple[bool, str]:
    s = default_registry().get(skill)
    assert s.verifier is not None
    v = s.verifier.check_batch([(s.input_model.model_validate(inp), s.output_model.model_validate(out))])[0]
    return v.ok, v.reason


def test_every_benchmark_is_registered() -> None:
    for name in ["escalation", "batching", "dag", "halting", "particles", "dispatch", "verify", "startup"]:
        assert name in BENCHMARKS
        assert callable(importlib.import_module(BENCHMARKS[name], "tinyfleet.bench").run)


def test_unknown_benchmark_is_an_input_error() -> None:
    with pytest.raises(InputError, match="nope"):
        run_benchmarks(["halting", "nope"], quick=True)


@pytest.mark.parametrize("kind", ["sudoku 9x9", "sudoku 4x4", "maze side > 9", "maze side <= 9", "forecast"])
def test_simulated_wrong_answers_are_rejected_by_the_skills_verifiers(kind: str) -> None:
    rng = random.Random(4)
    if kind.startswith("sudoku"):
        size = int(kind.split()[1][0])
        skill, inp = "sudoku.solve", {"puzzle": sudoku.generate(size, rng)[0]}
    elif kind.startswith("maze"):
        skill, inp = "maze.route", {"grid": maze.generate(15 if ">" in kind else 7, rng, loops=0.1)}
    else:
        skill, inp = "series.forecast", _forecast_input()
        if skill not in default_registry():
            pytest.skip("series.forecast is not registered")
    assert category(inp) == kind
    right = exact_answer(_body(inp))
    ok, reason = _verdict(skill, inp, json.loads(right))
    if skill != "series.forecast":  # a right puzzle answer verifies; a forecast may or may not
        assert ok, reason
    always = SimConfig(error_rates={kind: 1.0}, seed=1)
    text, wrong = respond(always, _body(inp), right)
    assert wrong and text != right
    ok, reason = _verdict(skill, inp, json.loads(text))
    assert not ok and reason
    never = SimConfig(error_rates={kind: 0.0}, seed=1)
    assert respond(never, _body(inp), right) == (right, False)


def test_simulated_error_rate_is_the_stated_one_and_deterministic_per_seed() -> None:
    rng = random.Random(2)
    inputs = [{"puzzle": sudoku.generate(4, rng)[0]} for _ in range(300)]
    cfg = SimConfig(error_rates={"sudoku 4x4": 0.3}, seed=5)

    def decisions(c: SimConfig) -> list[bool]:
        return [respond(c, _body(i), exact_answer(_body(i)))[1] for i in inputs]

    first = decisions(cfg)
    assert 0.22 <= sum(first) / len(first) <= 0.38  # 0.3 stated; 300 draws: within ~3.5 sigma
    assert decisions(cfg) == first  # same seed, same answers
    assert decisions(SimConfig(error_rates={"sudoku 4x4": 0.3}, seed=6)) != first
    # requests that are not escalated steps are never made wrong
    plan_req = {"messages": [{"role": "user", "content": "Task: plan something"}]}
    assert respond(SimConfig(error_rates={"sudoku 4x4": 1.0}), plan_req, "{}") == ("{}", False)


def test_token_rule_counts_pretokenizer_pieces() -> None:
    assert count_tokens("123456789") == 3  # digits go in runs of at most 3
    assert count_tokens("[[1,2],[3,4]]") == 9  # "[[" 1 "," 2 "],[" 3 "," 4 "]]"
    assert count_tokens("hello world") == 2
    assert count_tokens("internationalization") == 4  # 20 letters: one token per 6
    body = {"messages": [{"role": "user", "content": "hello world"}]}
    assert count_prompt_tokens(body) == 3 + 3 + 2


def test_planner_solve_is_priced_from_the_real_prompt_over_http() -> None:
    """The planner's real solve path, over HTTP to the simulated model: the usage it is billed
    for is the stated token rule applied to the request it actually sent and the reply it got,
    and the reply took at least the stated service time."""
    from planners.openai import OpenAIPlanner

    seen: list[dict[str, Any]] = []

    def answer(body: dict[str, Any]) -> str:
        seen.append(body)
        return exact_answer(body)

    puzzle = sudoku.generate(4, random.Random(0))[0]
    sim = SimConfig(error_rates={}, seed=0)
    skill = default_registry().get("sudoku.solve")

    async def go() -> Any:
        with BenchStubServer(answer, sim=sim) as stub:
            planner = OpenAIPlanner(stub.settings(), prices=prices(sim))
            try:
                t0 = time.perf_counter()
                a = await planner.solve(Step(id="s1", skill="sudoku.solve", inputs={"puzzle": puzzle}), skill.input_model(puzzle=puzzle), skill)
                return a, time.perf_counter() - t0
            finally:
                await planner.aclose()

    attempt, secs = asyncio.run(go())
    assert len(seen) == 1
    reply = json.dumps(attempt.output, separators=(", ", ": "))
    assert attempt.output == {"solution": sudoku.solve_exact(puzzle)}
    assert attempt.cost.tokens_in == count_prompt_tokens(seen[0])
    assert "input (JSON)" in seen[0]["messages"][-1]["content"] and seen[0].get("response_format")
    expected_out = count_tokens(exact_answer(seen[0]))
    assert attempt.cost.tokens_out == expected_out, reply
    price = prices(sim).price(GPT4O_CLASS.name)
    assert attempt.cost.cost_usd == pytest.approx((attempt.cost.tokens_in * price.per_mtok_in + expected_out * price.per_mtok_out) / 1e6)
    assert secs >= GPT4O_CLASS.seconds(expected_out)  # the simulated service time is spent (a lower bound)


def test_escalation_reports_the_four_baselines() -> None:
    from tinyfleet.bench import escalation

    res = escalation.run(True, tiny=True)
    _check_shape(res)
    rows = {r["name"]: r for r in res["rows"]}
    assert [r["name"] for r in res["rows"]] == list(ROWS) == ["large_only", "exact_only", "tiny_only", "fleet"]
    for r in rows.values():
        for f in ROW_FIELDS:
            assert f in r, (r["name"], f)
    n = rows["large_only"]["steps"]
    forecasts = sum(it.category == "forecast" for it in workload(n, seed=escalation.SEED))
    # every step went to the simulated large model; a forecast also sends its holdout (at most 2 calls)
    assert n <= rows["large_only"]["large_calls"] <= n + forecasts
    assert rows["large_only"]["tokens_in"] > 0 and rows["large_only"]["cost_usd"] > 0
    assert rows["exact_only"]["large_calls"] == 0 and rows["tiny_only"]["large_calls"] == 0
    assert "exact" in rows["exact_only"]["settled per tier"]
    # at the stated error rates (9x9 sudoku 0.9) some large answers are wrong and fail their step
    assert rows["large_only"]["failed"] > 0 and rows["large_only"]["verified_share"] < rows["exact_only"]["verified_share"]
    assert res["wrong_verified"] == {name: 0 for name in ROWS}  # every verified puzzle answer is right
    sim = res["simulated_model"]
    assert sim["models"][0]["name"] == GPT4O_CLASS.name and sim["models"][0]["source"]
    assert {e["step"] for e in sim["error_rates"]} >= {"sudoku 9x9", "maze side > 9"}
    assert [t["fleet vs"] for t in res["tables"]["fleet vs each baseline"]] == ["large_only", "exact_only", "tiny_only"]
    md = markdown({"date": "d", "command": "c", "machine": {"cpus": 2, "platform": "p", "python": "3"},
                   "benchmarks": {"escalation": res}})
    assert "| name | steps | verified_share |" in md and "simulated models" in md and "fleet vs each baseline" in md


def test_workload_mixes_every_category() -> None:
    items = workload(10, seed=1)
    assert {it.category for it in items} >= {"sudoku 4x4", "sudoku 6x6", "sudoku 9x9", "maze"}


def test_batching_tiny(ray_session: None) -> None:
    from tinyfleet.bench import batching

    res = batching.run(True, tiny=True)
    _check_shape(res)
    if res["rows"]:  # a TRM sudoku checkpoint is bundled
        pools = {r["pool"]: r for r in res["rows"]}
        assert set(pools) == {"model alone, batch 1", "model alone, batch 256", "max_batch 1", "max_batch 256 (dynamic)"}
        assert pools["max_batch 1"]["mean batch"] == 1.0
        # the bundled checkpoint answers through the pool, batched as well as one at a time (one item's leeway)
        one, batched = pools["max_batch 1"]["exact %"], pools["max_batch 256 (dynamic)"]["exact %"]
        assert batched > 0 and abs(batched - one) <= 100 / 24 + 1e-9


def test_dag_compares_the_fleet_with_a_react_loop() -> None:
    from tinyfleet.bench import dag

    res = dag.run(True, tiny=True)
    _check_shape(res)
    (row,) = res["rows"]
    assert row["width"] == 2
    assert row["react large calls"] == 3  # one per lookup, one for the final answer
    assert row["fleet LLM calls (plan)"] == 1  # the planner's one call; the lookups go to the small model
    assert row["react tokens"] > 0 and row["fleet tokens"] > 0


def test_dag_react_answer_script() -> None:
    from tinyfleet.bench.dag import answer

    task = "Task: t\nTask inputs (JSON): " + json.dumps({"questions": ["a", "b"]})
    sys_msg = {"role": "system", "content": "You are a ReAct agent. tools"}
    first = answer({"messages": [sys_msg, {"role": "user", "content": task}]})
    assert 'Action Input: {"question": "a"}' in first
    done = answer({"messages": [sys_msg, {"role": "user", "content": task},
                                {"role": "user", "content": 'Observation: {"answer": "x"}'},
                                {"role": "user", "content": 'Observation: {"answer": "y"}'}]})
    assert done.endswith('Final Answer: ["x", "y"]')


def test_dispatch_tiny(ray_session: None) -> None:
    from tinyfleet.bench import dispatch

    res = dispatch.run(True, tiny=True)
    _check_shape(res)
    assert [r["step"] for r in res["rows"]] == ["no-op"] * 5 + ["5 ms"] * 5
    assert res["rows"][2]["method"].startswith("(c) tinyfleet pool (")
    assert res["rows"][3]["method"].startswith("(d) hand-batched Ray actors") and res["rows"][4]["method"].startswith("(e) Ray task per 256")
    assert res["rows"][2]["pool vs this"] == 1.0
    assert "hand-batched actors" in res["summary"] and "target >= 1x the actors" in res["summary"]
    assert "5 ms: the pool" in res["summary"] and "target > 1x" in res["summary"]


def test_startup_tiny_times_the_local_run_against_import_torch() -> None:
    from tinyfleet.bench import startup

    res = startup.run(True, tiny=True)
    _check_shape(res)
    rows = {r["command"]: r for r in res["rows"]}
    local = rows["tinyfleet run (local executor)"]
    assert rows["python -c 'import torch'"]["vs import torch"] == 1.0
    # the run's own seconds come from its report, so start-up is the rest of the command's time
    assert 0 < local["the run itself s"] < local["median s"]
    assert "target <= 1.5x" in res["summary"]


def test_halting_tiny() -> None:
    from tinyfleet.bench import halting

    res = halting.run(True, tiny=True)
    _check_shape(res)
    rows = res["rows"]
    for early, full in zip(rows[::2], rows[1::2], strict=True):
        assert early["skill"] == full["skill"] and early["inference"] == "early halting"
        assert early["mean steps"] <= full["mean steps"]  # halting never runs more steps than the cap


def test_particles_tiny() -> None:
    from tinyfleet.bench import particles

    res = particles.run(True, tiny=True)
    _check_shape(res)
    cases = dict.fromkeys(r["case"] for r in res["rows"])
    for case in cases:
        mine = [r for r in res["rows"] if r["case"] == case]
        assert [r["particles"] for r in mine] == [1, 2, "exact solver"]
        assert mine[-1]["verified %"] == 100.0  # the exact solver's answers, checked by the kit
        one_pass_failed = mine[0]["verified %"] < 100.0
        assert (mine[1]["recovered of 1-pass failures"] is not None) == one_pass_failed
    assert "particle 0" not in res["summary"] and "by construction" not in res["summary"]


def test_harness_writes_json_markdown_and_plots(tmp_path: Path) -> None:
    results = run_benchmarks(["halting", "particles"], quick=True, tiny=True)
    md = write_results(results, tmp_path)
    doc = json.loads((tmp_path / "bench.json").read_text())
    assert set(doc["benchmarks"]) == {"halting", "particles"}
    assert doc["machine"]["cpus"] and doc["date"] and doc["command"].startswith("tinyfleet bench halting particles")
    text = (tmp_path / "bench.md").read_text()
    assert text == md and "**halting**" in text and "| skill | inference |" in text
    for name in ("halting", "particles"):
        png = tmp_path / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"![{name}]({name}.png)" in text


def test_markdown_of_a_failed_target_says_so() -> None:
    results = {"date": "2026-01-01", "command": "tinyfleet bench x", "machine": {"cpus": 2, "platform": "p", "python": "3"},
               "benchmarks": {"x": {"rows": [{"a": 1.5}], "summary": "s", "ok": False}}}
    assert "**x** (target NOT met): s" in markdown(results)


def test_bench_command_rejects_unknown_names(tmp_path: Path) -> None:
    args = argparse.Namespace(names=["nope"], quick=True, json=True, out=str(tmp_path))
    with pytest.raises(InputError):
        bench_command(args)
