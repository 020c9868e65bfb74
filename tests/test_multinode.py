"""A real multi-node Ray cluster on this machine under faults (issue 18): a head with no CPUs
and worker nodes of the two types of ``ray_cluster.yaml`` (``cpu_worker``: ``cpu_node``;
``gpu_worker``: ``gpu_node``), each a ``ray start`` process of its own (tests/cluster_nodes.py).

- pools land on the node types they ask for (``PoolOptions.resources``), read back from the
  actors themselves (``RayExecutor.pool_info``);
- a ``cpu_worker`` node lost in the middle of a 2,000-step mixed run (its raylet SIGKILLed):
  every step verified, each answered once (one journal entry per step), the re-sends counted
  and the lost node named in the report, the pools back on the other ``cpu_worker`` node;
- the only ``gpu_worker`` node, host of the maze heuristic pool, lost while that pool is busy:
  its steps climb past the tier with the reason and still end verified;
- the driver of a ``ray job submit`` run killed mid-run: the run re-submitted with ``--resume``
  on the same journal re-runs no verified step.

The drivers run in subprocesses (the pytest process holds its own Ray session). Wall times are
printed (``-s``), never asserted. The cluster is stopped at the end by killing the process
groups it started, never with ``ray stop``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_nodes import RAY, ROOT, Driver, LocalCluster, _pgid_members, journal_ids, journal_rows, running_cluster, settled_once

from workers.kits import sudoku


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with running_cluster([("cpu-a", "cpu_worker"), ("cpu-b", "cpu_worker"), ("gpu-a", "gpu_worker")], dashboard=True) as c:
        yield c


@pytest.mark.slow
def test_pools_land_on_their_node_types_and_a_lost_cpu_node_loses_no_step(cluster: LocalCluster, tmp_path: Path) -> None:
    n_sudoku, n_maze = 1000, 1000
    base = Driver(cluster, tmp_path, "base", n_sudoku, n_maze)
    kinds = {name: node.kind for name, node in cluster.nodes.items()}
    assert {kinds[n] for n in base.placed["mn.maze.greedy"]} == {"gpu_worker"}
    for pool in ("mn.sudoku.propagate", "sudoku.exact", "maze.bfs"):
        assert {kinds[n] for n in base.placed[pool]} == {"cpu_worker"}, (pool, base.placed)
    quiet = base.result()
    report = settled_once(quiet, base.journal, n_sudoku + n_maze)
    assert report["status"] == "succeeded" and report["totals"]["verified"] == n_sudoku + n_maze
    assert report["lost_nodes"] == [] and report["totals"]["resends"] == 0

    run = Driver(cluster, tmp_path, "lost-cpu", n_sudoku, n_maze)
    victim = run.placed["mn.sudoku.propagate"][0]
    at = run.wait_rows(400)
    cluster.nodes[victim].kill()
    got = run.result()
    report = settled_once(got, run.journal, n_sudoku + n_maze)
    assert report["status"] == "succeeded", report["error"]
    assert report["totals"]["verified"] == n_sudoku + n_maze
    assert report["totals"]["resends"] >= 1  # the batches the lost node held were sent again
    assert report["lost_nodes"] == [run.node_ids[victim]]
    (survivor,) = {n for n, k in kinds.items() if k == "cpu_worker"} - {victim}
    for pool in ("mn.sudoku.propagate", "sudoku.exact", "maze.bfs"):
        assert set(got["placed_after"][pool]) == {survivor}, got["placed_after"]  # restarted on the other cpu_worker
    print(f"\nnode loss: {n_sudoku + n_maze} steps, {victim} killed after {at} settled; "
          f"wall {quiet['wall_s']:.1f} s without the fault, {got['wall_s']:.1f} s with it "
          f"({got['wall_s'] / quiet['wall_s']:.2f}x); re-sends {report['totals']['resends']}")


@pytest.mark.slow
def test_losing_the_last_gpu_node_while_its_pool_is_busy_climbs_past_with_a_reason(cluster: LocalCluster, tmp_path: Path) -> None:
    n_sudoku, n_maze = 200, 800
    run = Driver(cluster, tmp_path, "lost-gpu", n_sudoku, n_maze)
    (victim,) = set(run.placed["mn.maze.greedy"])
    assert cluster.nodes[victim].kind == "gpu_worker"
    at = run.wait_rows(200)  # the greedy pool's queue still holds hundreds of maze jobs
    cluster.nodes[victim].kill()
    got = run.result()
    report = settled_once(got, run.journal, n_sudoku + n_maze)
    assert report["status"] == "succeeded", report["error"]
    assert report["totals"]["verified"] == n_sudoku + n_maze  # the exact tier (bfs, on cpu_worker) answered
    assert report["lost_nodes"] == [run.node_ids[victim]]
    climbed = [s for s in report["steps"] if s["skill"] == "maze.route" and s["tiers_tried"] == ["greedy", "bfs"]
               and any("lost its node" in (t["attempt"]["error"] or "") for t in s["trials"])]
    assert len(climbed) >= n_maze // 4, len(climbed)
    assert all(s["tier"] == "bfs" for s in climbed)
    print(f"\npool-node loss: {n_sudoku + n_maze} steps, {victim} killed after {at} settled; "
          f"{len(climbed)} maze steps climbed past 'greedy' with the reason; wall {got['wall_s']:.1f} s")


# ------------------------------------------------------------------------------- driver loss


def _submit(cluster: LocalCluster, *entrypoint: str, wait: bool) -> subprocess.CompletedProcess[str]:
    """``ray job submit`` to the head's job server, retried while it is still coming up."""
    deadline = time.monotonic() + 120
    while True:
        out = subprocess.run(
            [RAY, "job", "submit", "--address", f"http://127.0.0.1:{cluster.dashboard_port}", *([] if wait else ["--no-wait"]),
             "--", *entrypoint],
            env=cluster.env, cwd=ROOT, capture_output=True, text=True, timeout=300,
        )
        said = out.stdout + out.stderr
        starting = ("Connection refused", "Failed to connect", "No available agent", "try again later", "Max retries exceeded")
        if out.returncode == 0 or not any(s in said for s in starting) or time.monotonic() > deadline:
            return out
        time.sleep(2)


def _driver_pid(marker: str) -> int | None:
    """The job's driver: the process whose command line runs the orchestrator with ``marker``."""
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                argv = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"orchestrator" in argv and marker.encode() in argv:
                return int(d)
    return None


@pytest.mark.slow
def test_driver_killed_then_resumed_reruns_no_verified_step(cluster: LocalCluster, tmp_path: Path) -> None:
    import random

    rng = random.Random(3)
    n = 2000
    task = tmp_path / "long.json"
    task.write_text(json.dumps({"id": "driver-loss", "skill": "sudoku.solve",
                                "inputs": {"items": [{"puzzle": sudoku.generate(6, rng)[0]} for _ in range(n)]}}))
    journal = tmp_path / "driver-loss.sqlite"  # on the head's disk: where the next driver runs
    run = ["python", "-m", "orchestrator", "run", "--policy", "final_only", "--no-served", "--json"]
    first = _submit(cluster, *run, str(task), "--journal", str(journal), wait=False)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    deadline = time.monotonic() + 240
    while journal_rows(journal) < 300:
        assert time.monotonic() < deadline, "the job's driver did not settle 300 steps in 240 s"
        time.sleep(0.05)
    pid = _driver_pid(str(journal))
    assert pid is not None, "the job's driver process was not found"
    os.kill(pid, signal.SIGKILL)
    time.sleep(1.0)
    before = journal_ids(journal)
    assert 300 <= len(before) < n, len(before)  # killed in the middle of the run

    second = _submit(cluster, *run, "--resume", str(journal), wait=True)
    said = second.stdout + second.stderr
    assert second.returncode == 0, said[-4000:]
    report = json.loads(second.stdout[second.stdout.index("{"): second.stdout.rindex("}") + 1])
    assert report["status"] == "succeeded" and report["totals"]["verified"] == n
    assert report["totals"]["resumed"] == len(before)
    after = journal_ids(journal)
    assert len(after) == n
    rerun = [sid for sid in before if after[sid] > 1]
    assert rerun == []  # zero verified steps re-run
    assert all(c == 1 for c in after.values())
    print(f"\ndriver loss: {n} steps, driver killed after {len(before)} settled; "
          f"the resumed run took {report['totals']['resumed']} from the journal and ran {n - len(before)}")


@pytest.mark.slow
def test_cluster_processes_are_this_clusters_own(cluster: LocalCluster) -> None:
    """Every node runs in a process group of its own, under this cluster's temp dir: stopping
    it touches no other Ray of the machine."""
    for node in cluster.nodes.values():
        if not node.killed:
            assert node.raylet_pid() is not None, node.name
            assert _pgid_members(node.pgid)
    assert cluster.temp_dir.startswith("/tmp/tfmn")


def test_a_pool_is_re_placed_only_on_a_node_that_has_what_it_asks() -> None:
    """Which live nodes can take a lost pool's actors: its custom resources, GPUs and CPUs."""
    from orchestrator import LocalExecutor
    from orchestrator.ray_executor import _can_host
    from workers import PoolOptions

    gpu_pool = PoolOptions(num_cpus=0.1, resources={"gpu_node": 0.5})
    cpu_node = {"CPU": 1.0, "cpu_node": 4.0}
    gpu_node = {"CPU": 1.0, "gpu_node": 4.0}
    assert not _can_host(gpu_pool, cpu_node) and _can_host(gpu_pool, gpu_node)
    assert not _can_host(PoolOptions(num_cpus=0.0, num_gpus=1.0), gpu_node)  # no GPU there
    assert _can_host(PoolOptions(num_cpus=0.0, num_gpus=1.0), {**gpu_node, "GPU": 1.0})
    assert not _can_host(PoolOptions(num_cpus=0.5), {"cpu_node": 4.0})  # the head: no CPU
    assert LocalExecutor().lost_nodes_since(0.0) == []  # no nodes, none lost
