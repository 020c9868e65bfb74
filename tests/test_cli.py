"""The CLI end to end, in subprocesses: demo, run, skills, verify, bad input, kill and resume."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import sudoku_items

from workers.kits import maze, sudoku

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


def write(tmp: Path, name: str, obj: object) -> str:
    p = tmp / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(p)


def test_demo_on_the_embedded_default_with_ray(tmp_path: Path) -> None:
    out = cli("demo", "--json", "--out", str(tmp_path / "demo"))
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["status"] == "succeeded" and report["executor"] == "ray"
    assert report["totals"]["verified"] == report["totals"]["steps"] > 0
    assert (tmp_path / "demo" / "report.json").is_file()


def test_run_100_mixed_9x9_sudoku_all_verified_and_totals_add_up(tmp_path: Path) -> None:
    items = sudoku_items(9, 50, seed=101, givens=38) + sudoku_items(9, 50, seed=102, givens=22)
    task = write(tmp_path, "task.json", {"skill": "sudoku.solve", "inputs": {"items": items}})
    out = cli("run", task, "--json", "--executor", "local", "--journal", str(tmp_path / "j.sqlite"))
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    t = report["totals"]
    assert report["status"] == "succeeded" and t["verified"] == 100
    for item, sol in zip(items, report["output"], strict=True):
        assert sudoku.check_solution(item["puzzle"], sol["solution"]) is None
    assert sum(t["per_tier"].values()) == 100
    assert t["per_tier"].get("exact", 0) >= 1 and t["escalated"] >= t["per_tier"].get("exact", 0)
    first_tiers = {s["tiers_tried"][0] for s in report["steps"]}
    assert t["escalated"] == sum(1 for s in report["steps"] if s["tier"] != s["tiers_tried"][0])
    assert len(first_tiers) == 1
    easy = report["steps"][:50]
    assert sum(1 for s in easy if s["tier"] != "exact") >= 45  # easy puzzles settle below the fallback
    hard = report["steps"][50:]
    climbed = [sum(1 for s in part if s["tier"] != s["tiers_tried"][0]) for part in (easy, hard)]
    assert climbed[1] > climbed[0] and any(s["tier"] == "exact" for s in hard), climbed  # hard ones climb more, some to the exact solver
    assert t["worker_seconds"] == pytest.approx(sum(s["cost"]["worker_s"] for s in report["steps"]), abs=1e-4)
    assert t["particles"] == sum(len(s["trials"]) for s in report["steps"])
    # every second counted: each step's verifications, and the driver's own CPU time
    assert t["verifier_seconds"] == pytest.approx(sum(s["cost"]["verifier_s"] for s in report["steps"]), abs=1e-4)
    assert all(s["cost"]["verifier_s"] > 0 for s in report["steps"])  # every step had answers to rule on
    assert 0 < t["driver_seconds"] < t["wall_s"]
    assert t["cpu_seconds"] == pytest.approx(t["worker_seconds"] + t["verifier_seconds"] + t["driver_seconds"], abs=1e-5)
    from orchestrator.ledger import CPU_CORE_HOUR_USD

    assert t["cpu_cost_usd"] == pytest.approx(t["cpu_seconds"] / 3600 * CPU_CORE_HOUR_USD, rel=1e-3)
    assert t["total_cost_usd"] == pytest.approx(t["cost_usd"] + t["cpu_cost_usd"], rel=1e-6)
    assert t["cost_per_step_usd"] == pytest.approx(t["total_cost_usd"] / 100, rel=1e-3)


def test_progress_and_summary_without_json(tmp_path: Path) -> None:
    task = write(tmp_path, "t.json", {"inputs": {"grid": maze.generate(11, __import__("random").Random(3))}})
    out = cli("run", task, "--executor", "local", "--journal", str(tmp_path / "j.sqlite"))
    assert out.returncode == 0, out.stderr
    assert "status: succeeded" in out.stdout and "cost per thought" in out.stdout
    cpu_line = next(ln for ln in out.stdout.splitlines() if ln.startswith("cpu: "))
    assert "worker" in cpu_line and "verifier" in cpu_line and "driver" in cpu_line
    assert "plan ready: 1 step (rules planner)" in out.stderr and "1/1 done" in out.stderr
    assert "answer (maze.route):" in out.stdout and "path: " in out.stdout


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "not valid JSON: .* line 1"),
        ({"skill": "chess.move", "inputs": {"board": 1}}, "unknown skill 'chess.move'"),
        ({"skill": "sudoku.solve", "inputs": {"puzzle": [[0] * 5] * 5}}, "n in \\(4, 6, 9\\)"),
        ({"skill": "sudoku.solve", "inputs": {"puzzle": [[7, 0, 0, 0], [0] * 4, [0] * 4, [0] * 4]}}, "values must be 0..4"),
        ({"skill": "sudoku.solve", "inputs": {"puzzle": [[1, 1, 0, 0], [0] * 4, [0] * 4, [0] * 4]}}, "repeats 1"),
        ({"skill": "maze.route", "inputs": {"grid": ["...", "..G"]}}, "exactly one 'S'"),
        ({"goal": "", "inputs": {}}, "needs a 'goal'"),
        ({"skill": "sudoku.solve", "inputs": {}, "budget": {"max_tokens": -1}}, "budget.max_tokens"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path: Path, content: object, match: str) -> None:
    out = cli("run", write(tmp_path, "bad.json", content), "--executor", "local")
    assert out.returncode == 2, out.stdout + out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in out.stderr
    import re

    assert re.search(match, lines[0]), lines[0]


def test_an_unsolvable_consistent_puzzle_exits_1_with_the_failed_step_in_the_report(tmp_path: Path) -> None:
    """Consistent givens (no repeat in a row, column or box) pass validation; the exact tier
    finds there is no solution at run time, so the run fails (exit 1), not bad input (2)."""
    puzzle = [[1, 2, 3, 0], [0, 0, 0, 4], [0] * 4, [0] * 4]
    task = write(tmp_path, "t.json", {"skill": "sudoku.solve", "inputs": {"puzzle": puzzle}})
    out = cli("run", task, "--json", "--executor", "local", "--journal", str(tmp_path / "j.sqlite"))
    assert out.returncode == 1, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["status"] == "failed"
    (step,) = report["steps"]
    assert step["status"] == "failed" and step["tiers_tried"][-1] == "exact"
    assert "step 'main'" in step["error"] and "the exact tier 'exact' found no answer" in step["error"]
    assert "first: main:" in report["error"] and "no solution" in report["error"]
    assert report["totals"]["verifier_seconds"] > 0 and report["totals"]["driver_seconds"] > 0
    plain = cli("run", task, "--executor", "local", "--journal", str(tmp_path / "j2.sqlite"))
    assert plain.returncode == 1 and "status: failed" in plain.stdout and "no solution" in plain.stdout


def test_missing_file_and_bad_usage_exit_2(tmp_path: Path) -> None:
    assert cli("run", str(tmp_path / "nope.json")).returncode == 2
    out = cli("run", "--policy", "bogus", "x.json")
    assert out.returncode == 2 and "usage error" in out.stderr


def test_skills_lists_ladders(tmp_path: Path) -> None:
    out = cli("skills", "--json")
    assert out.returncode == 0
    skills = {s["skill"]: s for s in json.loads(out.stdout)}
    assert {"sudoku.solve", "maze.route", "route.assemble"} <= set(skills)
    assert skills["sudoku.solve"]["fallback"]["kind"] == "exact"
    assert skills["sudoku.solve"]["verifier"] == "sudoku.rules"


def test_verify_accepts_good_rejects_bad_and_refuses_malformed(tmp_path: Path) -> None:
    puzzle, solution = sudoku.generate(6, __import__("random").Random(9))
    inp = write(tmp_path, "in.json", {"puzzle": puzzle})
    good = cli("verify", "--skill", "sudoku.solve", "--input", inp, "--answer", write(tmp_path, "a.json", {"solution": solution}), "--json")
    assert good.returncode == 0 and json.loads(good.stdout)["ok"] is True
    wrong = [row[:] for row in solution]
    wrong[0][0], wrong[0][1] = wrong[0][1], wrong[0][0]
    bad = cli("verify", "--skill", "sudoku.solve", "--input", inp, "--answer", write(tmp_path, "b.json", {"solution": wrong}))
    assert bad.returncode == 1 and "rejected" in bad.stdout
    malformed = cli("verify", "--skill", "sudoku.solve", "--input", inp, "--answer", write(tmp_path, "c.json", {"sol": 1}))
    assert malformed.returncode == 2 and "answer" in malformed.stderr


def test_sigkill_half_way_then_resume_reruns_nothing_verified(tmp_path: Path) -> None:
    items = sudoku_items(9, 300, seed=202, givens=21)
    task = write(tmp_path, "task.json", {"skill": "sudoku.solve", "inputs": {"items": items}})
    journal = tmp_path / "run.sqlite"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", task, "--json", "--executor", "local", "--journal", str(journal)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, env=env,
    )

    def settled_ids() -> list[str]:
        if not journal.exists():
            return []
        try:
            with sqlite3.connect(journal) as db:
                return [r[0] for r in db.execute("SELECT step_id FROM steps WHERE status IN ('verified','accepted')")]
        except sqlite3.OperationalError:
            return []

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not settled_ids():
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = settled_ids()
    assert 0 < len(before) < 300, f"kill landed with {len(before)} steps settled; the run must be half-way"

    out = cli("run", "--resume", str(journal), "--json", "--executor", "local")
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["status"] == "succeeded" and report["totals"]["verified"] == 300
    assert report["totals"]["resumed"] == len(before)
    resumed = {s["step_id"] for s in report["steps"] if s["resumed"]}
    assert resumed == set(before)
    after = settled_ids()
    assert len(after) == 300  # every step once: nothing settled before was run again
    assert len(set(after)) == 300
    for item, sol in zip(items, report["output"], strict=True):
        assert sudoku.check_solution(item["puzzle"], sol["solution"]) is None


def test_particles_flag_sends_several_particles_to_stochastic_tiers(tmp_path: Path) -> None:
    task = write(tmp_path, "t.json", {"skill": "sudoku.solve", "inputs": {"items": sudoku_items(4, 3, seed=77)}})
    out = cli("run", task, "--json", "--executor", "local", "--particles", "3", "--journal", str(tmp_path / "j.sqlite"))
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    for step in report["steps"]:
        first = step["tiers_tried"][0]
        tried = [t for t in step["trials"] if t["attempt"]["tier"] == first]
        assert len(tried) == (3 if first == "trm" else 1)  # deterministic tiers get one particle


def test_run_honours_the_documented_environment(tmp_path: Path) -> None:
    """`tinyfleet run` builds its fleet through FleetConfig: TINYFLEET_EXECUTOR picks the
    executor and TINYFLEET_JOURNAL_DIR the journal's folder; a command-line option wins; a bad
    value is one line naming the variable, exit 2."""

    task = tmp_path / "t.json"
    task.write_text(json.dumps({"id": "envrun", "skill": "sudoku.solve", "inputs": {"puzzle": [[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]]}}))
    env = {**os.environ, "TINYFLEET_EXECUTOR": "local", "TINYFLEET_JOURNAL_DIR": str(tmp_path / "journals")}
    out = subprocess.run([sys.executable, "-m", "orchestrator", "run", str(task), "--json"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["executor"] == "local"
    assert (tmp_path / "journals" / "envrun.sqlite").is_file() and not (tmp_path / "runs").exists()
    bad = subprocess.run([sys.executable, "-m", "orchestrator", "run", str(task), "--json"], capture_output=True, text=True, cwd=tmp_path,
                         env={**env, "TINYFLEET_EXECUTOR": "gpu-cloud"}, timeout=300)
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1 and "TINYFLEET_EXECUTOR" in bad.stderr, bad.stderr
    # the option wins over the environment (and is validated the same way)
    opt = subprocess.run([sys.executable, "-m", "orchestrator", "run", str(task), "--json", "--executor", "local"], capture_output=True, text=True,
                         cwd=tmp_path, env={**env, "TINYFLEET_EXECUTOR": "gpu-cloud"}, timeout=300)
    assert opt.returncode == 0, opt.stderr[-2000:]


def _settled(journal: Path) -> int:
    if not journal.exists():
        return 0
    try:
        with sqlite3.connect(journal) as db:
            return int(db.execute("SELECT count(*) FROM steps WHERE status IN ('verified','accepted')").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


@pytest.mark.parametrize("sig, code, says", [(signal.SIGTERM, 143, "terminated (SIGTERM)"), (signal.SIGINT, 130, "interrupted")])
def test_a_signal_mid_run_stops_it_keeps_the_journal_and_says_so_in_one_line(tmp_path: Path, sig: int, code: int, says: str) -> None:
    task = write(tmp_path, "task.json", {"skill": "sudoku.solve", "inputs": {"items": sudoku_items(9, 300, seed=202, givens=21)}})
    journal = tmp_path / "run.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", task, "--json", "--executor", "local", "--journal", str(journal)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None and not _settled(journal):
        time.sleep(0.05)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"tinyfleet: {says}: the run stopped"), err
    assert f"journal {journal}" in lines[0] and f"tinyfleet run --resume {journal}" in lines[0]
    assert out == ""  # no report: the run did not finish
    assert 0 < _settled(journal) < 300  # what finished before the signal stays in the journal


def test_sigterm_while_ray_starts_stops_the_run(tmp_path: Path) -> None:
    """SIGTERM at the first progress line (Ray starting, before any step) still stops the run
    with the one-line message: Ray's own SIGTERM handler does not replace the CLI's."""
    task = write(tmp_path, "t.json", {"skill": "sudoku.solve", "inputs": {"items": sudoku_items(9, 50, seed=5, givens=22)}})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", task, "--executor", "ray", "--address", "local", "--journal", str(tmp_path / "j.sqlite")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()
    assert "local Ray" in first, first
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, first + err[-2000:]
    assert "tinyfleet: terminated (SIGTERM): the run stopped" in err.splitlines()[-1]
    assert "status:" not in out


def test_a_ray_run_prints_no_ray_warning(tmp_path: Path) -> None:
    """No token-auth warning (or any other Ray log line) on an ordinary run on a local Ray."""
    task = write(tmp_path, "t.json", {"skill": "sudoku.solve", "inputs": {"puzzle": [[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]]}})
    out = cli("run", task, "--executor", "ray", "--address", "local", "--journal", str(tmp_path / "j.sqlite"))
    assert out.returncode == 0, out.stderr[-2000:]
    said = out.stdout + out.stderr
    assert "Token authentication" not in said and "RAY_AUTH_MODE" not in said
    assert not [ln for ln in said.splitlines() if "WARNING" in ln or ln.startswith("[20") or " W " in ln[:40]], said
    assert "started a local Ray" in out.stderr


def test_text_output_tells_the_story_and_json_mode_prints_only_the_report(tmp_path: Path) -> None:
    """Without --json: the plan with each step's settling tier, each escalation with its
    reason, the answer drawn for its skill (a sudoku grid), totals with one meaning per name and
    the legend on stdout; progress on stderr, advancing per step, its last line once. With
    --json: stdout is the RunReport JSON and nothing else, stderr is empty."""
    items = sudoku_items(9, 6, seed=101, givens=22)
    task = write(tmp_path, "t.json", {"skill": "sudoku.solve", "inputs": {"items": items}})
    out = cli("run", task, "--executor", "local", "--journal", str(tmp_path / "j.sqlite"))
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout.splitlines()
    assert text[0] == "plan: 6 steps (rules planner)"
    rows = [ln.split() for ln in text if ln.startswith("item")]
    assert len(rows) == 6 and all(r[-1] == "verified" for r in rows)
    climbs = [ln for ln in text if ln.startswith("  item") and " -> " in ln]
    assert climbs, out.stdout  # hard puzzles climb: each climb names its reason
    import re

    assert all(re.match(r"  item\d+: \w+ -> \w+: \S.{8,}", ln) for ln in climbs), climbs
    assert any("verifier" in ln and "rejected" in ln for ln in climbs)
    # the answer drawn as a grid: the first item's solution, box by box
    first = json.loads(cli("run", task, "--json", "--executor", "local", "--journal", str(tmp_path / "j2.sqlite")).stdout)["output"][0]["solution"]
    row0 = " | ".join(" ".join(str(v) for v in first[0][c: c + 3]) for c in (0, 3, 6))
    assert "answer (sudoku.solve, 6 items; the first 3):" in text and f"    {row0}" in text
    escalated = next(ln for ln in text if ln.startswith("steps escalated: "))
    assert f"steps escalated: {len({ln.split(':')[0] for ln in climbs})}  escalation events: {len(climbs)}" in escalated
    legend = [ln for ln in text if ln.startswith("legend: ")]
    assert len(legend) == 1 and all(w in legend[0] for w in ("verified", "accepted", "particles", "escalation events", "cost per thought"))
    progress = out.stderr.splitlines()
    done = [ln for ln in progress if " done " in ln]
    assert [int(ln.split("] ")[1].split("/")[0]) for ln in done][-6:] == [1, 2, 3, 4, 5, 6]  # one line per settled step
    assert sum("6/6 done" in ln for ln in progress) == 1  # the final line once
    assert "starting pool sudoku.trm" in out.stderr  # pool start-up shows before the first step
    quiet = cli("run", task, "--json", "--executor", "local", "--journal", str(tmp_path / "j3.sqlite"))
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert json.loads(quiet.stdout)["status"] == "succeeded"


def test_answers_are_drawn_for_their_skill() -> None:
    from orchestrator.console import render_answer

    grid = ["S.#", "..#", "#.G"]
    maze_lines = render_answer("maze.route", {"path": [[0, 0], [1, 0], [1, 1], [2, 1], [2, 2]]}, inputs={"grid": grid})
    assert maze_lines == ["path: 4 moves from (0, 0) to (2, 2)", "S.#", "**#", "#*G"]
    fc = render_answer("series.forecast", {"mean": [1.0, 2.5], "p10": [0.5, 2.0], "p90": [1.5, 3.0]})
    assert fc[0].startswith("forecast: 2 step(s) ahead") and fc[2] == "  t+2: 2.500  [2.000 .. 3.000]"
    code = render_answer("code.function", {"code": "def f():\n    return 1"})
    assert code == ["code verdict: not verified", "def f():", "    return 1"]
    assert render_answer("route.assemble", {"legs": [1, 2]})[0] == "{"
