"""Hostile task files (issue 22): through the real CLI, a deeply nested JSON and task ids that
are an absolute path, climb with ``..`` or hold a NUL each exit 2 with one line on stderr and
write nothing anywhere; the readers and the journal path refuse them in-process too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.journal import journal_path
from orchestrator.taskfile import MAX_DEPTH, json_depth, load_task, read_json
from tinyfleet_core.errors import ConfigError, InputError
from tinyfleet_core.models import Task

ROOT = Path(__file__).resolve().parents[1]


def _files_under(path: Path) -> set[Path]:
    return {p for p in path.rglob("*")} if path.exists() else set()


def test_bad_task_files_exit_2_with_one_line_and_write_nothing(tmp_path: Path) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    outside = tmp_path / "outside"
    cases = {
        "absolute": {"id": str(outside / "evil"), "skill": "sudoku.solve", "inputs": {}},
        "dotdot": {"id": "../../outside/evil", "goal": "x"},
        "nul": {"id": "run\u0000id", "goal": "x"},
    }
    for name, body in cases.items():
        (work / f"{name}.json").write_text(json.dumps(body))
    (work / "deep.json").write_text('{"goal": "x", "inputs": {"a": ' + "[" * 100_000 + "]" * 100_000 + "}}")
    before = _files_under(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = {
        name: subprocess.Popen([sys.executable, "-m", "orchestrator", "run", f"{name}.json"], cwd=work, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in (*cases, "deep")
    }
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 2, (name, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("tinyfleet: error: task file"), (name, err)
        assert "Traceback" not in err
    assert _files_under(tmp_path) == before  # no runs/, no journal, nothing outside
    assert not outside.exists()


def test_the_messages_name_the_problem(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InputError, match=f"deeper than {MAX_DEPTH} levels"):
        read_json(deep)
    for bad, words in [("/etc/evil", "no '/'"), ("a/../../b", "no '/'"), ("..", "starting with a letter"),
                       (".hidden", "starting with a letter"), ("x\u0000y", "control character"),
                       ("tab\there", "control character"), ("x" * 65, "1-64"), ("", "1-64")]:
        f = tmp_path / "t.json"
        f.write_text(json.dumps({"id": bad, "goal": "g"}))
        with pytest.raises(InputError, match=words):
            load_task(f)
    raw = tmp_path / "raw.json"
    raw.write_bytes(b'{"id": "a\x00b", "goal": "g"}')  # a raw NUL is not even JSON
    with pytest.raises(InputError, match="not valid JSON"):
        load_task(raw)
    for good in ("delivery-day-a", "run_1.2", "A" * 64, "0abc"):
        assert Task(id=good, goal="g").id == good


def test_json_depth_ignores_brackets_in_strings() -> None:
    assert json_depth('{"a": "[[[[[[[[[[[[[[[["}', 3) <= 3
    assert json_depth('{"a": "\\"[[[[", "b": [[[1]]]}', 5) == 4  # escaped quote: still in the string
    assert json_depth('{"a": "\\"[[[[", "b": [[[1]]]}', 2) == 3  # stops once past the limit
    assert json_depth("[" * 70 + "]" * 70, 64) == 65


def test_journal_path_stays_in_its_directory(tmp_path: Path) -> None:
    assert journal_path(tmp_path, "run-1") == tmp_path / "run-1.sqlite"
    for bad in ("../x", "/abs", "a/b", "..", ".x", "a\x00b", "a\nb", ""):
        with pytest.raises(ConfigError):
            journal_path(tmp_path, bad)
