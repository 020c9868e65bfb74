"""The README's cluster path on a 2-CPU head started by the test: ``ray start --head
--num-cpus=2`` with token authentication, ``ray job submit ... -- python -m
tinyfleet.examples.planning_agent`` succeeds, and ``tinyfleet run`` on the same machine attaches
to that head (and says so) instead of crashing on resource arguments.

The head lives in its own Ray temp dir (``RAY_TMPDIR``), with every listener on a free port, so
neither the test session's shared Ray nor any other Ray on this machine sees it or is touched;
it is stopped in a ``finally`` by killing its process group (never ``ray stop``, which stops
every Ray of the machine)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Head:
    port: int
    dashboard: int
    env: dict[str, str]


@pytest.fixture
def head() -> Iterator[Head]:
    # Ray's unix socket paths must stay under ~107 bytes: a short temp dir under /tmp
    ray_tmp = tempfile.mkdtemp(prefix="tfc", dir="/tmp")
    env = {
        **os.environ,
        "RAY_TMPDIR": ray_tmp,  # this head's address file lives here, nowhere else
        "RAY_USAGE_STATS_ENABLED": "0",
        # the README's commands: token auth on for the head and every client of it
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": os.urandom(16).hex(),  # this test's own token; ~/.ray is not touched
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # `python` in the job is this one
    }
    env.pop("RAY_ADDRESS", None)
    port, dash = _free_port(), _free_port()
    proc = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--num-cpus=2", f"--port={port}", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dash}", "--min-worker-port=22000", "--max-worker-port=22999",
         # other Rays may run on this machine: every listener of this head on a free port
         f"--dashboard-agent-listen-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}",
         f"--runtime-env-agent-port={_free_port()}", f"--metrics-export-port={_free_port()}",
         f"--ray-client-server-port={_free_port()}"],
        env=env, cwd=ray_tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        yield Head(port, dash, env)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _submit(head: Head, *entrypoint: str) -> subprocess.CompletedProcess[str]:
    """``ray job submit`` as the README writes it, retried while the head is still coming up."""
    deadline = time.monotonic() + 150
    while True:
        out = subprocess.run(
            [RAY, "job", "submit", "--address", f"http://127.0.0.1:{head.dashboard}", "--working-dir", ".", "--", *entrypoint],
            env=head.env, cwd=ROOT, capture_output=True, text=True, timeout=240,
        )
        said = out.stdout + out.stderr
        starting = ("Connection refused", "Failed to connect", "No available agent", "try again later", "Max retries exceeded")
        if out.returncode == 0 or not any(s in said for s in starting) or time.monotonic() > deadline:
            return out
        time.sleep(2)


@pytest.mark.slow
def test_demo_by_ray_job_submit_on_a_2_cpu_head_then_run_attaches(head: Head, tmp_path: Path) -> None:
    job = _submit(head, "python", "-m", "tinyfleet.examples.planning_agent", "--json")
    said = job.stdout + job.stderr
    assert job.returncode == 0, said[-4000:]
    assert "Missing authentication token" not in said
    report = json.loads(job.stdout[job.stdout.index("{"): job.stdout.rindex("}") + 1])
    assert report["status"] == "succeeded" and report["executor"] == "ray"
    assert report["totals"]["verified"] == report["totals"]["steps"] > 0

    # a Ray started by `ray start` on this machine: `tinyfleet run` attaches and says so
    task = tmp_path / "t.json"
    task.write_text(json.dumps({"skill": "sudoku.solve", "inputs": {"puzzle": [[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]]}}))
    run = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", str(task), "--journal", str(tmp_path / "j.sqlite")],
        env=head.env, cwd=tmp_path, capture_output=True, text=True, timeout=240,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    attached = [ln for ln in run.stderr.splitlines() if "attached to" in ln]
    assert len(attached) == 1, run.stderr
    assert f":{head.port}" in attached[0] and "2 CPUs" in attached[0]
    assert "num_cpus and num_gpus must not be provided" not in run.stderr
