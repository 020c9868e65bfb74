"""``tinyfleet serve``: a long-lived fleet that ``tinyfleet run`` uses when it is up (issue 23).

Real processes: the server is ``tinyfleet serve`` in a subprocess (on the local executor, so
the test starts no second Ray), the clients are ``tinyfleet run`` subprocesses; they talk over
the real Unix socket."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.executor import LocalExecutor
from orchestrator.serve import FleetServer, ServeRequest, find_server, run_on_server
from tinyfleet_core.errors import ConfigError, PlanError

PUZZLE = [[0, 1, 2, 0], [2, 0, 3, 0], [1, 0, 0, 0], [0, 3, 0, 0]]


def _env(sock: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TINYFLEET_", "RAY_ADDRESS"))}
    env.update(TINYFLEET_SERVE_SOCKET=str(sock), OMP_NUM_THREADS="1")
    return env


def _cli(*args: str, cwd: Path, sock: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tinyfleet.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=_env(sock), timeout=timeout, check=False)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    home = tmp_path_factory.mktemp("served")
    sock_dir = home / "private"
    sock_dir.mkdir(mode=0o700)
    sock = sock_dir / "fleet.sock"
    proc = subprocess.Popen([sys.executable, "-m", "tinyfleet.cli", "serve", "--executor", "local"], cwd=home,
                            env=_env(sock), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while find_server(sock) is None:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "tinyfleet serve did not come up in 60 s"
        time.sleep(0.2)
    yield sock, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _task_file(where: Path, name: str = "sudoku.json", **extra: object) -> Path:
    path = where / name
    path.write_text(json.dumps({"skill": "sudoku.solve", "inputs": {"puzzle": PUZZLE}, **extra}))
    return path


def test_run_uses_the_served_fleet_and_writes_its_journal_where_the_client_said(
    served: tuple[Path, subprocess.Popen[str]], tmp_path: Path
) -> None:
    sock, _ = served
    _task_file(tmp_path, id="served-1")
    for _ in range(2):
        out = _cli("run", "sudoku.json", "--json", cwd=tmp_path, sock=sock)
        assert out.returncode == 0, out.stderr
        assert "running on the fleet served at" in out.stderr
        report = json.loads(out.stdout)
        assert report["status"] == "succeeded" and report["executor"] == "local"
        assert report["output"]["solution"][0][:3] == [3, 1, 2]
    # the journal is where the client's command would have put it: its cwd's runs/<task id>.sqlite
    assert (tmp_path / "runs" / "served-1.sqlite").exists()
    status = _cli("serve", "--status", cwd=tmp_path, sock=sock)
    assert status.returncode == 0 and "run(s)" in status.stdout
    assert int(status.stdout.split(" run(s)")[0].rsplit(" ", 1)[-1]) >= 2


def test_a_bad_task_on_the_served_fleet_gets_the_same_one_line_and_exit_status(
    served: tuple[Path, subprocess.Popen[str]], tmp_path: Path
) -> None:
    sock, _ = served
    (tmp_path / "bad.json").write_text(json.dumps({"skill": "sudoku.solve", "inputs": {"puzzle": [[1, 1], [0, 0]]}}))
    out = _cli("run", "bad.json", cwd=tmp_path, sock=sock)
    local = _cli("run", "bad.json", "--executor", "local", cwd=tmp_path, sock=sock)
    assert out.returncode == local.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == local.stderr.strip().splitlines()[-1]
    assert "Traceback" not in out.stderr


def test_the_local_executor_and_no_served_skip_the_served_fleet(
    served: tuple[Path, subprocess.Popen[str]], tmp_path: Path
) -> None:
    sock, _ = served
    _task_file(tmp_path)
    out = _cli("run", "sudoku.json", "--executor", "local", "--json", cwd=tmp_path, sock=sock)
    assert out.returncode == 0, out.stderr
    assert "served" not in out.stderr


def test_a_typed_error_raised_on_the_server_is_raised_again_in_the_client(
    served: tuple[Path, subprocess.Popen[str]],
) -> None:
    sock, _ = served
    request = ServeRequest(op="run", task={"skill": "no.such.skill", "inputs": {}})  # type: ignore[arg-type]
    with pytest.raises(PlanError, match="no.such.skill"):
        run_on_server(sock, request)
    with pytest.raises(ConfigError, match="serves the 'rules' planner"):
        run_on_server(sock, ServeRequest(op="run", task={"skill": "sudoku.solve", "inputs": {"puzzle": PUZZLE}},  # type: ignore[arg-type]
                                         planner="openai"))


def test_garbage_on_the_socket_gets_a_typed_refusal_and_the_server_keeps_serving(
    served: tuple[Path, subprocess.Popen[str]],
) -> None:
    sock, proc = served
    for garbage in (b"not json\n", b'{"op": "run", "task": {"skill": 3}}\n', b'{"op": "rm -rf"}\n', b"\n"):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(sock))
            s.sendall(garbage)
            reply = json.loads(s.makefile("rb").readline())
        assert reply["error"]["type"] == "InputError", reply
    assert proc.poll() is None and find_server(sock) is not None


def test_a_socket_directory_others_can_enter_is_refused_by_the_server_and_ignored_by_clients(tmp_path: Path) -> None:
    open_dir = tmp_path / "shared"
    open_dir.mkdir(mode=0o755)
    open_dir.chmod(0o755)
    sock = open_dir / "fleet.sock"
    with pytest.raises(ConfigError, match="not private to this user"):
        asyncio.run(FleetServer(executor=LocalExecutor(), path=sock).start())
    # a socket someone else could have put there is never used
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock))
    s.listen(1)
    try:
        assert find_server(sock) is None
    finally:
        s.close()


def test_a_stale_socket_file_is_not_a_server(tmp_path: Path) -> None:
    d = tmp_path / "p"
    d.mkdir(mode=0o700)
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(d / "fleet.sock"))
    s.close()  # the file stays, nobody listens: a server that died
    assert (d / "fleet.sock").exists() and find_server(d / "fleet.sock") is None


def test_stop_ends_the_server_and_removes_its_socket(served: tuple[Path, subprocess.Popen[str]], tmp_path: Path) -> None:
    sock, proc = served
    out = _cli("serve", "--stop", cwd=tmp_path, sock=sock)
    assert out.returncode == 0 and "stopping" in out.stdout
    assert proc.wait(timeout=30) == 0
    assert not sock.exists()
    after = _cli("serve", "--status", cwd=tmp_path, sock=sock)
    assert after.returncode == 1 and "no fleet is served" in after.stdout
