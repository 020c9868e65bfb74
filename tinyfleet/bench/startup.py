"""startup: what a small command costs from the shell, side by side in one run.

Each row is a fresh process timed from the shell (median of N, interleaved so that a noisy
neighbour hits every row alike): the interpreter alone, ``import torch``, ``import tinyfleet``,
``tinyfleet run`` of one 4x4 sudoku on the local executor, the same on a Ray that the command
starts itself, and the same command against a running ``tinyfleet serve`` (Ray and its pools
started once, by the first command; the rows time the commands after it). The run's own
seconds (the report's wall time) are read from each report, so the rest is start-up.

Targets (issue 23; both can fail): the local run within 1.5x of ``import torch`` alone (a
tiny tier needs torch, so that is the floor), and a command against the served fleet within 2x
of the local run."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["run"]

PUZZLE = [[0, 1, 2, 0], [2, 0, 3, 0], [1, 0, 0, 0], [0, 3, 0, 0]]


def _env(sock: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TINYFLEET_", "RAY_ADDRESS"))}
    env.update(TINYFLEET_SERVE_SOCKET=str(sock), OMP_NUM_THREADS="1", RAY_DEDUP_LOGS="0")
    return env


def _timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float | None]:
    """(seconds from the shell, the run's own wall seconds when the command printed a report)."""
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=600, check=False)
    dt = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:])} failed ({out.returncode}): {out.stderr[-500:]}")
    run_s = None
    if out.stdout.lstrip().startswith("{"):
        run_s = float(json.loads(out.stdout)["totals"]["wall_s"])
    return dt, run_s


def _serve(cwd: Path, env: dict[str, str], sock: Path) -> subprocess.Popen[str]:
    from orchestrator.serve import find_server

    proc = subprocess.Popen([sys.executable, "-m", "tinyfleet.cli", "serve"], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while find_server(sock) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"tinyfleet serve did not come up: {proc.communicate()[1][-500:]}")
        time.sleep(0.2)
    return proc


def run(quick: bool, *, tiny: bool = False) -> dict[str, Any]:
    reps = 1 if tiny else (3 if quick else 5)
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="tinyfleet-startup-") as d:
        cwd = Path(d)
        sock_dir = cwd / "sock"
        sock_dir.mkdir(mode=0o700)
        sock = sock_dir / "fleet.sock"
        env = _env(sock)
        (cwd / "task.json").write_text(json.dumps({"skill": "sudoku.solve", "inputs": {"puzzle": PUZZLE}}))
        run_cmd = [py, "-m", "tinyfleet.cli", "run", "task.json", "--json"]
        commands: dict[str, list[str]] = {
            "python -c pass": [py, "-c", "pass"],
            "python -c 'import torch'": [py, "-c", "import torch"],
            "python -c 'import tinyfleet'": [py, "-c", "import tinyfleet"],
            "tinyfleet run (local executor)": [*run_cmd, "--executor", "local"],
        }
        if not tiny:
            commands["tinyfleet run (Ray, started by the command)"] = [*run_cmd, "--no-served"]
        times: dict[str, list[float]] = {k: [] for k in commands}
        run_s: dict[str, list[float]] = {k: [] for k in commands}
        for _ in range(reps):  # interleaved: a noisy minute hits every row alike
            for name, cmd in commands.items():
                dt, rs = _timed(cmd, cwd, env)
                times[name].append(dt)
                if rs is not None:
                    run_s[name].append(rs)
        served = "tinyfleet run (against tinyfleet serve, Ray)"
        first_served: float | None = None
        if not tiny:
            proc = _serve(cwd, env, sock)
            try:
                first_served, _ = _timed(run_cmd, cwd, env)  # starts the pools; not a repeated command
                times[served], run_s[served] = [], []
                for _ in range(reps):
                    dt, rs = _timed(run_cmd, cwd, env)
                    times[served].append(dt)
                    run_s[served].append(rs or 0.0)
            finally:
                subprocess.run([py, "-m", "tinyfleet.cli", "serve", "--stop"], cwd=cwd, env=env, capture_output=True,
                               timeout=60, check=False)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
    med = {k: statistics.median(v) for k, v in times.items()}
    torch_s = med["python -c 'import torch'"]
    local_s = med["tinyfleet run (local executor)"]
    rows = []
    for name, s in med.items():
        row: dict[str, Any] = {"command": name, "median s": round(s, 3), "vs import torch": round(s / torch_s, 2)}
        if run_s[name]:
            rs = statistics.median(run_s[name])
            row["the run itself s"] = round(rs, 3)
            row["start-up and exit s"] = round(s - rs, 3)
        rows.append(row)
    ok_local = local_s <= 1.5 * torch_s
    summary = [f"local run {local_s:.2f} s = {local_s / torch_s:.2f}x import torch ({torch_s:.2f} s; target <= 1.5x)"]
    ok = ok_local
    if served in med:
        ratio = med[served] / local_s
        ok = ok and ratio <= 2.0
        ray_s = med["tinyfleet run (Ray, started by the command)"]
        summary.append(f"against tinyfleet serve {med[served]:.2f} s = {ratio:.2f}x the local run (target <= 2x; "
                       f"the first command on the served fleet {first_served:.2f} s, a command starting its own Ray {ray_s:.2f} s)")
    return {"rows": rows, "summary": "; ".join(summary) + f" (median of {reps})", "ok": ok}
