"""The benchmark harness on tiny sizes: every benchmark's run function works, the JSON,
markdown and PNG files are written, unknown names are refused. Speed claims live in
``tinyfleet bench``, not here."""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.bench import (
    BENCHMARKS,
    bench_command,
    markdown,
    run_benchmarks,
    write_results,
)
from orchestrator.errors import InputError

NEW = ["escalation", "batching", "dag", "halting", "particles"]


def _check_shape(res: dict[str, Any]) -> None:
    assert isinstance(res["summary"], str) and res["summary"]
    assert isinstance(res["ok"], bool)
    assert isinstance(res["rows"], list)
    for row in res["rows"]:
        assert isinstance(row, dict) and row
    json.dumps(res)  # JSON-serialisable


def test_every_benchmark_is_registered() -> None:
    for name in [*NEW, "dispatch", "verify"]:
        assert name in BENCHMARKS
        assert callable(importlib.import_module(BENCHMARKS[name], "orchestrator.bench").run)


def test_unknown_benchmark_is_an_input_error() -> None:
    with pytest.raises(InputError, match="nope"):
        run_benchmarks(["halting", "nope"], quick=True)


def test_escalation_tiny() -> None:
    from orchestrator.bench import escalation

    res = escalation.run(True, tiny=True)
    _check_shape(res)
    policies = [r["policy"] for r in res["rows"]]
    assert policies == ["large only", "tiny tiers only", "tinyfleet ladder"]
    large, _, ladder = res["rows"]
    assert large["large-model calls"] == large["steps"] == 25  # every step went to the (stub) large model
    assert ladder["verified %"] == 100.0
    assert ladder["large-model calls"] <= large["large-model calls"]


def test_escalation_stub_answers_exactly() -> None:
    import random

    from orchestrator.bench.escalation import exact_answer, workload
    from workers import maze, sudoku

    items = workload(10, seed=1)
    assert {it.category for it in items} >= {"sudoku 4x4", "sudoku 6x6", "sudoku 9x9", "maze"}
    puzzle, solution = sudoku.generate(4, random.Random(0))
    body = {"messages": [{"role": "user", "content": "Step 's1' input (JSON): " + json.dumps({"puzzle": puzzle})}]}
    assert json.loads(exact_answer(body)) == {"solution": solution}
    grid = maze.generate(9, random.Random(0))
    body = {"messages": [{"role": "user", "content": "Step 's2' input (JSON): " + json.dumps({"grid": grid})}]}
    assert len(json.loads(exact_answer(body))["path"]) == len(maze.bfs_path(grid))
    with pytest.raises(ValueError):
        exact_answer({"messages": [{"role": "user", "content": "plan something"}]})


def test_batching_tiny(ray_session: None) -> None:
    from orchestrator.bench import batching

    res = batching.run(True, tiny=True)
    _check_shape(res)
    if res["rows"]:  # a TRM sudoku checkpoint is bundled
        pools = {r["pool"]: r for r in res["rows"]}
        assert set(pools) == {"model alone, batch 1", "model alone, batch 256", "max_batch 1", "max_batch 256 (dynamic)"}
        assert pools["max_batch 1"]["mean batch"] == 1.0
        # the bundled checkpoint answers through the pool, batched as well as one at a time (one item's leeway)
        one, batched = pools["max_batch 1"]["exact %"], pools["max_batch 256 (dynamic)"]["exact %"]
        assert batched > 0 and abs(batched - one) <= 100 / 24 + 1e-9


def test_dag_tiny() -> None:
    from orchestrator.bench import dag

    res = dag.run(True, tiny=True)
    _check_shape(res)
    assert [r["width"] for r in res["rows"]] == [2, 4]
    # speed itself is the benchmark's to report (timed assertions flake on a shared machine):
    # here only that every width was measured against its chain
    assert all(r["speed-up"] > 0 and r["speed-up"] == r["speed-up"] for r in res["rows"])


def test_halting_tiny() -> None:
    from orchestrator.bench import halting

    res = halting.run(True, tiny=True)
    _check_shape(res)
    for r in res["rows"]:
        assert 1.0 <= r["mean steps"] <= 64


def test_particles_tiny() -> None:
    from orchestrator.bench import particles

    res = particles.run(True, tiny=True)
    _check_shape(res)
    for r in res["rows"]:
        assert r["particles run"] == r["particles"] * r["steps"]


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
