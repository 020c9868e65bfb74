"""Every bad argument or environment value is one line on stderr naming the problem, exit 2,
no traceback (issue 24, item 5): a table of cases through the real ``tinyfleet`` entry point.

The table runs ``tinyfleet.cli.main`` in this process (each case fails before any run starts);
the Ray address cases run as subprocesses, where no other Ray is initialised, and show that an
unreachable address is refused at once instead of Ray's minutes of reconnect warnings."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tinyfleet.cli import main

ROOT = Path(__file__).resolve().parents[1]
PUZZLE = [[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]]
_CLEAN = ("TINYFLEET_", "OPENAI_", "RAY_ADDRESS")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder with a good task file, a bad one and a plain file; a clean environment; the
    SIGTERM handler the CLI installs is put back afterwards."""
    (tmp_path / "task.json").write_text(json.dumps({"skill": "sudoku.solve", "inputs": {"puzzle": PUZZLE}}))
    (tmp_path / "notjson.json").write_text("{not json")
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "adir").mkdir()
    for var in list(os.environ):
        if var.startswith(_CLEAN):
            monkeypatch.delenv(var)
    monkeypatch.chdir(tmp_path)
    before = signal.getsignal(signal.SIGTERM)
    yield tmp_path
    signal.signal(signal.SIGTERM, before)


CASES = [
    # (argv, environment, what the one line must say)
    (["run", "task.json", "--executor", "local", "--particles", "0"], {}, r"--particles: must be 1 or more, got 0"),
    (["run", "task.json", "--executor", "local", "--particles", "-3"], {}, r"--particles: must be 1 or more, got -3"),
    (["run", "task.json", "--executor", "local", "--particles", "three"], {}, r"--particles: must be a whole number"),
    (["demo", "--executor", "local", "--out", "a-file"], {}, r"--out a-file is an existing file; give a directory"),
    (["run", "adir"], {}, r"task file adir is a directory, give a task JSON file"),
    (["run", "missing.json"], {}, r"task file missing.json does not exist"),
    (["run", "notjson.json"], {}, r"task file notjson.json is not valid JSON: .* line 1"),
    (["run", "task.json"], {"OPENAI_BASE_URL": "not-a-url"}, r"OPENAI_BASE_URL: must be an http\(s\) URL"),
    (["demo", "--out", "d"], {"OPENAI_BASE_URL": "ftp://models"}, r"OPENAI_BASE_URL: must be an http\(s\) URL"),
    (["run", "task.json"], {"TINYFLEET_EXECUTOR": "gpu-cloud"}, r"TINYFLEET_EXECUTOR.*'ray' or 'local'"),
    (["run", "task.json"], {"TINYFLEET_POLICY": "greedy"}, r"TINYFLEET_POLICY"),
    (["run", "task.json"], {"TINYFLEET_PLANNER": "gpt"}, r"TINYFLEET_PLANNER"),
    (["run", "task.json"], {"TINYFLEET_MAX_TOKENS": "lots"}, r"TINYFLEET_MAX_TOKENS.*integer"),
    (["run", "task.json"], {"TINYFLEET_DEADLINE_S": "-5"}, r"TINYFLEET_DEADLINE_S"),
    (["run", "task.json"], {"TINYFLEET_SEED": "abc"}, r"TINYFLEET_SEED.*integer"),
    (["run", "task.json"], {"TINYFLEET_LLM_TIMEOUT_S": "-1"}, r"TINYFLEET_LLM_TIMEOUT_S.*greater than 0"),
    (["run", "task.json"], {"TINYFLEET_RESPONSE_FORMAT": "xml"}, r"TINYFLEET_RESPONSE_FORMAT"),
    (["run", "task.json", "--planner", "openai"], {}, r"no API key .* OPENAI_API_KEY"),
    (["run"], {}, r"run needs a TASK.json file or --resume JOURNAL"),
    (["run", "task.json", "--policy", "bogus"], {}, r"argument --policy: invalid choice"),
]


@pytest.mark.parametrize("argv, env, says", CASES, ids=[" ".join(c[0]) + "".join(f" {k}={v}" for k, v in c[1].items()) for c in CASES])
def test_bad_argument_or_environment_is_one_line_exit_2(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str], env: dict[str, str], says: str
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    code = main(argv)
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, (out, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("tinyfleet: ") and "Traceback" not in err
    assert re.search(says, lines[0]), lines[0]
    assert out == ""
    assert not (workdir / "d").exists()  # refused before anything ran


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # free once the socket closes: nothing listens there


@pytest.mark.parametrize(
    "args, env, says",
    [
        (["--address", "127.0.0.1:{port}"], {}, r"cannot reach a Ray cluster at 127\.0\.0\.1:{port}: connection refused"),
        ([], {"RAY_ADDRESS": "127.0.0.1:{port}"}, r"cannot reach a Ray cluster at 127\.0\.0\.1:{port}"),
        (["--address", "http://127.0.0.1:8265"], {}, r"is a dashboard \(job submission\) address"),
        (["--address", "not an address"], {}, r"'not an address' is not a Ray address"),
    ],
    ids=["closed-port", "RAY_ADDRESS-closed-port", "dashboard-url", "garbage"],
)
def test_bad_ray_address_is_one_line_exit_2_without_ray_warnings(tmp_path: Path, args: list[str], env: dict[str, str], says: str) -> None:
    port = _closed_port()
    task = tmp_path / "t.json"
    task.write_text(json.dumps({"skill": "sudoku.solve", "inputs": {"puzzle": PUZZLE}}))
    full_env = {**{k: v for k, v in os.environ.items() if not k.startswith(_CLEAN)}, "PYTHONPATH": str(ROOT)}
    full_env |= {k: v.format(port=port) for k, v in env.items()}
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", str(task), "--executor", "ray", *(a.format(port=port) for a in args)],
        capture_output=True, text=True, cwd=tmp_path, env=full_env, timeout=120,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, out.stderr  # no Ray reconnect warnings, no progress before the error
    assert re.search(says.format(port=port), lines[0]), lines[0]
    assert "ray start --head" in lines[0] or "dashboard" in lines[0] or "host:port" in lines[0]
    assert out.stdout == ""
