"""A real multi-node Ray cluster on this machine, for the fault tests (tests/test_multinode.py).

``LocalCluster`` starts a head (``--num-cpus=0``, as ``ray_cluster.yaml``'s head) and worker
nodes as separate ``ray start`` processes, each node in its own process group, with its own
ports and a temp dir of its own cluster (never the test session's Ray or another agent's). A
worker node carries the custom resource of its type in ``ray_cluster.yaml`` (``cpu_node`` for
``cpu_worker``, ``gpu_node`` for ``gpu_worker``) and one resource naming it (``tfn_<name>``),
so a driver can say on which node a pool's actors run. ``node.kill()`` SIGKILLs that node's
raylet, which is how a reclaimed spot instance looks to the rest of the cluster; ``stop()``
kills every process group the cluster started (never ``ray stop``, which would stop every Ray
of the machine).

Run as a script, this module is the driver of a fault run (a subprocess: the pytest process
holds its own Ray session)::

    python tests/cluster_nodes.py --address 127.0.0.1:PORT --sudoku 1000 --maze 1000 \
        --journal J.sqlite --out report.json

It attaches a :class:`RayExecutor`, starts the pools pinned to their node types, prints one
JSON line ``{"placed": {pool: [node name, ...]}}``, runs the mixed plan with the journal, and
writes ``{"report": RunReport, "placed_after": ..., "lost_nodes": ...}`` to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinyfleet_core.models import Attempt
from workers.base import Job
from workers.kits.classic import MazeGreedyWorker, SudokuPropagationWorker

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")

# a lost raylet is declared dead after about period x threshold (Ray's defaults: ~15-30 s)
FAST_HEALTH_CHECK = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}


_given: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now, never one this process handed out before (ports of a
    cluster are picked before any of its listeners starts)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _given:
            _given.add(port)
            return port


def _pgid_members(pgid: int) -> list[tuple[int, str]]:
    """(pid, command name) of every live process in process group ``pgid`` (read from /proc)."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            raw = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1: raw.rindex(")")]
        rest = raw[raw.rindex(")") + 2:].split()
        if rest[0] != "Z" and int(rest[2]) == pgid:
            found.append((int(d), comm))
    return found


@dataclass
class Node:
    """One ``ray start`` node: its name, type, resources and process group."""

    name: str
    kind: str
    resources: dict[str, float]
    num_cpus: int
    pgid: int
    killed: bool = False

    def raylet_pid(self) -> int | None:
        return next((pid for pid, comm in _pgid_members(self.pgid) if comm == "raylet"), None)

    def kill(self) -> int:
        """SIGKILL this node's raylet (the node is lost; its workers follow). Returns the pid."""
        pid = self.raylet_pid()
        if pid is None:
            raise RuntimeError(f"node {self.name}: no raylet runs in process group {self.pgid}")
        os.kill(pid, signal.SIGKILL)
        self.killed = True
        return pid

    def stop(self) -> None:
        """Kill every process of this node (its process group), SIGTERM then SIGKILL."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.pgid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline and _pgid_members(self.pgid):
                time.sleep(0.2)
            if not _pgid_members(self.pgid):
                return


@dataclass
class LocalCluster:
    """A head and worker nodes on this machine; ``with LocalCluster() as c:`` stops it all."""

    dashboard: bool = False
    fast_health_check: bool = True
    redis: bool = False
    """GCS fault tolerance: the head keeps the GCS's tables in a ``redis-server`` this cluster starts."""
    redis_port: int = field(default_factory=free_port)
    """Declare a lost node dead within seconds (:data:`FAST_HEALTH_CHECK`); False keeps Ray's defaults."""
    temp_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="tfmn", dir="/tmp"))
    port: int = field(default_factory=free_port)
    dashboard_port: int = field(default_factory=free_port)
    token: str = field(default_factory=lambda: os.urandom(16).hex())
    nodes: dict[str, Node] = field(default_factory=dict)
    _worker_base: int = field(default_factory=lambda: random.Random().randrange(30000, 58000, 400))
    _started: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """The environment of this cluster's nodes and of any driver or ``ray job`` client of it."""
        env = {
            **os.environ,
            **(FAST_HEALTH_CHECK if self.fast_health_check else {}),
            "RAY_TMPDIR": self.temp_dir,
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        env.pop("RAY_ADDRESS", None)
        return env

    def _start(self, name: str, kind: str, args: list[str], resources: dict[str, float], num_cpus: int,
               env: dict[str, str] | None = None) -> Node:
        self._started += 1
        base = self._worker_base + 40 * self._started
        cmd = [
            RAY, "start", f"--num-cpus={num_cpus}", f"--temp-dir={self.temp_dir}", "--disable-usage-stats",
            f"--resources={json.dumps(resources)}",
            f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
            f"--min-worker-port={base}", f"--max-worker-port={base + 39}",
            f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
            "--object-store-memory=100000000", *args,
        ]
        proc = subprocess.Popen(cmd, env={**self.env, **(env or {})}, cwd=self.temp_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        node = Node(name, kind, resources, num_cpus, proc.pid)
        self.nodes[name] = node  # stopped by stop() even when its start fails
        out, _ = proc.communicate(timeout=180)
        if proc.returncode != 0:
            raise RuntimeError(f"ray start of node {name} failed ({proc.returncode}): {out[-3000:]}")
        return node

    def start_head(self) -> Node:
        """The head (``--num-cpus=0``); with ``redis``, the redis-server it keeps its tables in first."""
        env = {}
        if self.redis:
            if "redis" not in self.nodes:
                self._start_redis()
            env = {"RAY_REDIS_ADDRESS": f"127.0.0.1:{self.redis_port}", "RAY_external_storage_namespace": "tinyfleet-test"}
        args = ["--head", f"--port={self.port}", f"--ray-client-server-port={free_port()}",
                "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
                f"--include-dashboard={'true' if self.dashboard else 'false'}"]
        return self._start("head", "head", args, {"tfn_head": 1}, 0, env)

    def _start_redis(self) -> None:
        redis = shutil.which("redis-server")
        if redis is None:
            raise RuntimeError("GCS fault tolerance needs redis-server (apt-get install redis-server)")
        proc = subprocess.Popen([redis, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                                cwd=self.temp_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.nodes["redis"] = Node("redis", "redis", {}, 0, proc.pid)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.redis_port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not listen on {self.redis_port}") from None
                time.sleep(0.1)

    def restart_head(self) -> Node:
        """Kill the head's processes (GCS, raylet, dashboard) and start it again on the same ports."""
        self.nodes.pop("head").stop()
        # `ray start --head` refuses a port that a raylet of this machine names as its GCS (the
        # worker nodes' raylets do: they wait for the head); on a real cluster the head is another
        # machine. Without this machine's record of the old head, the check passes.
        Path(self.temp_dir, "ray_current_cluster").unlink(missing_ok=True)
        return self.start_head()

    def add_node(self, name: str, kind: str, num_cpus: int = 1) -> Node:
        """A worker node of ``kind`` (``cpu_worker`` or ``gpu_worker``), named ``name``."""
        typed = {"cpu_worker": "cpu_node", "gpu_worker": "gpu_node"}[kind]
        return self._start(name, kind, [f"--address={self.address}"], {typed: 4, f"tfn_{name}": 1}, num_cpus)

    def add_nodes(self, spec: Sequence[tuple[str, str]], num_cpus: int = 1) -> list[Node]:
        """Start worker nodes ``[(name, kind), ...]``, one after the other (several ``ray start``
        at once on one machine time out waiting for their raylets to register)."""
        return [self.add_node(name, kind, num_cpus) for name, kind in spec]

    def stop(self) -> None:
        for node in reversed(list(self.nodes.values())):
            node.stop()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------- the driver


class PacedPropagate(SudokuPropagationWorker):
    """The built-in sudoku propagation tier, 30 ms per batch: a run lasts long enough for a
    node to be lost in the middle of it."""

    name = "mn.sudoku.propagate"
    delay = 0.03

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        time.sleep(self.delay)
        return super().solve_batch(jobs)


class PacedGreedy(MazeGreedyWorker):
    """The built-in greedy maze tier (a heuristic, not always shortest), 30 ms per batch."""

    name = "mn.maze.greedy"
    delay = 0.03

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        time.sleep(self.delay)
        return super().solve_batch(jobs)


def fault_registry() -> Any:
    """Sudoku and maze, their first tier pinned to a node type, their exact tier to ``cpu_node``:
    sudoku ``propagate`` (2 replicas) on ``cpu_worker`` nodes, maze ``greedy`` (the heuristic
    pool) on the ``gpu_worker`` node, ``exact`` and ``bfs`` on ``cpu_worker`` nodes."""
    from workers import PoolOptions, Tier
    from workers.builtin import default_registry, maze_skill, sudoku_skill
    from workers.kits.classic import MazeBFSSolver, SudokuExactSolver

    cpu = {"cpu_node": 0.5}
    reg = default_registry()
    sk, mz = sudoku_skill(), maze_skill()
    sk.ladder = [Tier("propagate", PacedPropagate, "heuristic", PoolOptions(replicas=2, num_cpus=0.1, max_batch=4, resources=cpu, timeout_s=60))]
    sk.fallback = Tier("exact", SudokuExactSolver, "exact", PoolOptions(num_cpus=0.1, max_batch=16, resources=cpu, timeout_s=60))
    mz.ladder = [Tier("greedy", PacedGreedy, "heuristic", PoolOptions(num_cpus=0.1, max_batch=4, resources={"gpu_node": 0.5}, timeout_s=60))]
    mz.fallback = Tier("bfs", MazeBFSSolver, "exact", PoolOptions(num_cpus=0.1, max_batch=16, resources=cpu, timeout_s=60))
    reg.register(sk)
    reg.register(mz)
    return reg


def mixed_plan(n_sudoku: int, n_maze: int, seed: int = 5) -> Any:
    from orchestrator import Plan, Step
    from workers.kits import maze, sudoku

    rng = random.Random(seed)
    steps = [Step(id=f"s{k}", skill="sudoku.solve", inputs={"puzzle": sudoku.generate(4, rng)[0]}) for k in range(n_sudoku)]
    steps += [Step(id=f"m{k}", skill="maze.route", inputs={"grid": maze.generate(7, rng, loops=0.3)}) for k in range(n_maze)]
    rng.shuffle(steps)
    return Plan(steps=steps, output=[s.id for s in steps])


# ------------------------------------------------------------------ fault-run drivers (tests)

DRIVER = str(HERE / "cluster_nodes.py")
DRIVERS: list[subprocess.Popen[str]] = []  # killed when a test's cluster stops, should a test fail mid-run

@contextlib.contextmanager
def running_cluster(nodes: Sequence[tuple[str, str]], **options: Any) -> Iterator[LocalCluster]:
    """A ``LocalCluster(**options)`` with its head and ``nodes`` started; on the way out every
    fault-run driver still running (DRIVERS) is killed and the cluster stopped."""
    c = LocalCluster(**options)
    try:
        c.start_head()
        c.add_nodes(nodes)
        yield c
    finally:
        for proc in DRIVERS:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        c.stop()


def journal_rows(path: Path) -> int:
    try:
        with sqlite3.connect(path) as db:
            return int(db.execute("SELECT count(*) FROM steps").fetchone()[0])
    except sqlite3.Error:  # not created yet
        return 0


def journal_ids(path: Path) -> Counter[str]:
    with sqlite3.connect(path) as db:
        return Counter(r[0] for r in db.execute("SELECT step_id FROM steps"))


class Driver:
    """A fault-run driver (tests/cluster_nodes.py) in a subprocess, attached to ``cluster``."""

    def __init__(self, cluster: LocalCluster, tmp: Path, name: str, sudoku_n: int, maze_n: int, *, resume: bool = False) -> None:
        """A new run of the mixed plan, or with ``resume`` the run in ``tmp/name.sqlite`` continued."""
        self.journal, self.out = tmp / f"{name}.sqlite", tmp / f"{name}{'-resumed' if resume else ''}.json"
        self.proc = subprocess.Popen(
            [sys.executable, DRIVER, "--address", cluster.address, "--sudoku", str(sudoku_n), "--maze", str(maze_n),
             "--journal", str(self.journal), "--out", str(self.out), "--task-id", name, *(["--resume"] if resume else [])],
            env=cluster.env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        DRIVERS.append(self.proc)
        first = self.proc.stdout.readline() if self.proc.stdout else ""
        if not first:
            self.proc.wait(timeout=30)
            raise AssertionError(f"the driver ended before placing its pools: {self.proc.stderr.read()[-3000:] if self.proc.stderr else ''}")
        got = json.loads(first)
        self.placed: dict[str, list[str]] = got["placed"]
        self.node_ids: dict[str, str] = got["nodes"]

    def wait_rows(self, n: int, timeout: float = 180) -> int:
        deadline = time.monotonic() + timeout
        while (rows := journal_rows(self.journal)) < n:
            assert self.proc.poll() is None, f"the driver ended early: {self.proc.stderr.read()[-3000:] if self.proc.stderr else ''}"
            assert time.monotonic() < deadline, f"only {rows} steps in the journal after {timeout} s"
            time.sleep(0.05)
        return rows

    def result(self, timeout: float = 300) -> dict[str, Any]:
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
            raise AssertionError(f"the driver did not finish within {timeout} s: {err[-3000:]}") from None
        assert self.proc.returncode == 0, err[-4000:]
        return json.loads(self.out.read_text())


def settled_once(got: dict[str, Any], journal: Path, steps: int) -> dict[str, Any]:
    """Every step verified or failed with a stated reason, each in the journal exactly once."""
    report = got["report"]
    assert len(report["steps"]) == steps
    for s in report["steps"]:
        assert s["status"] == "verified" or s["error"], s["step_id"]
        assert len(s["tiers_tried"]) == len(set(s["tiers_tried"]))  # no tier answered a step twice
    ids = journal_ids(journal)
    assert len(ids) == steps and set(ids.values()) == {1}, ids.most_common(3)
    return report


def _node_names() -> dict[str, str]:
    import ray

    out = {}
    for n in ray.nodes():
        names = [k.removeprefix("tfn_") for k in n.get("Resources", {}) if k.startswith("tfn_")]
        out[n["NodeID"]] = names[0] if names else n["NodeID"][:8]
    return out


def _placed(ex: Any) -> dict[str, list[str]]:
    names = _node_names()
    return {p: [names.get(i["node"], i["node"][:8]) for i in ex.pool_info(p)] for p in ex.pools()}


async def _drive(args: argparse.Namespace) -> dict[str, Any]:
    from orchestrator import Fleet, Policy, PoolSpec, Task
    from orchestrator.ray_executor import RayExecutor

    reg = fault_registry()
    ex = RayExecutor(address=args.address, backoff_s=0.05)
    fleet = Fleet(registry=reg, executor=ex, policy=Policy(final="fallback"))
    await ex.start()
    for skill in ("sudoku.solve", "maze.route"):
        sk = reg.get(skill)
        for t in [*sk.ladder, sk.fallback]:
            await ex.ensure_pool(PoolSpec(t.pool_name, t.worker, t.pool))
    print(json.dumps({"placed": _placed(ex), "nodes": {v: k for k, v in _node_names().items()}}), flush=True)
    t0 = time.monotonic()
    if args.resume:
        report = await fleet.run(resume=args.journal)
    else:
        plan = mixed_plan(args.sudoku, args.maze)
        report = await fleet.run(Task(id=args.task_id, goal="fault run"), plan=plan, journal=args.journal)
    wall = time.monotonic() - t0
    refresh = getattr(ex, "refresh_placement", None)
    if refresh is not None:
        await refresh()
    after = _placed(ex)
    lost = list(getattr(ex, "lost_nodes", []))
    await fleet.close()
    return {"report": report.model_dump(mode="json"), "wall_s": wall, "placed_after": after, "lost_nodes": lost}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--address", required=True)
    ap.add_argument("--sudoku", type=int, default=1000)
    ap.add_argument("--maze", type=int, default=1000)
    ap.add_argument("--journal", required=True)
    ap.add_argument("--task-id", default="fault-run")
    ap.add_argument("--out", required=True)
    ap.add_argument("--resume", action="store_true", help="continue the run recorded in --journal")
    args = ap.parse_args(argv)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 PID`: where a stuck driver waits
    got = asyncio.run(_drive(args))
    Path(args.out).write_text(json.dumps(got))
    print(json.dumps({"done": got["report"]["status"], "wall_s": got["wall_s"]}), flush=True)
    return 0


if __name__ == "__main__":
    import cluster_nodes  # the workers are pickled by reference to this module, not __main__

    sys.exit(cluster_nodes.main())
