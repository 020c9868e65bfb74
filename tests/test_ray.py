"""Ray-specific behaviour: placement on a (logical) GPU, killed actors during a long run,
``ray job submit`` against a real local head, and the cluster-launcher config."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytest
import yaml
from helpers import SlowWorker, sudoku_items

from orchestrator import Fleet, Plan, Policy, PoolSpec, Step, Task
from orchestrator.ray_executor import RayExecutor
from workers import PoolOptions, Tier
from workers.builtin import default_registry, sudoku_skill
from workers.kits import sudoku
from workers.kits.classic import SudokuExactSolver

ROOT = Path(__file__).resolve().parents[1]


class PacedSolver(SlowWorker):
    """Exact answers after 20 ms per batch: long enough for kills to land mid-batch."""

    name = "test.paced"
    delay = 0.02


def test_cluster_yaml_passes_rays_own_validator() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    types = prepared["available_node_types"]
    assert types["head"]["resources"] == {"CPU": 0}
    assert "gpu_node" in types["gpu_worker"]["resources"]
    assert any("ray[default]==" in c for c in prepared["setup_commands"])
    broken = copy.deepcopy(config)
    broken["available_node_types"]["cpu_worker"]["max_workerz"] = 3
    with pytest.raises(Exception, match="max_workerz"):  # Ray's schema error names the bad key
        validate_config(prepare_config(broken))


async def test_gpu_pool_lands_on_the_logical_gpu_and_runs_on_cpu(ray_session: None) -> None:
    import orchestrator.ray_executor as rx

    rx._warned.discard("note:an actor holds a GPU from Ray but torch sees no CUDA device; GPU pools run on CPU")
    ex = RayExecutor()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name in ("gpu-a", "gpu-b"):
            await ex.ensure_pool(PoolSpec(name, SudokuExactSolver, PoolOptions(num_cpus=0, num_gpus=0.25)))
    try:
        for name in ("gpu-a", "gpu-b"):
            (info,) = ex.pool_info(name)
            assert info["gpu_ids"], "the pool was not scheduled on the GPU"
            assert info["device"] == "cpu"
        gpu_warnings = [w for w in caught if "CUDA" in str(w.message)]
        assert len(gpu_warnings) == 1
        item = sudoku_items(4, 1, 0)[0]
        from workers import Job

        a = await ex.submit("gpu-a", Job(sudoku.SudokuInput.model_validate(item)))
        assert sudoku.check_solution(item["puzzle"], a.output["solution"]) is None  # type: ignore[index]
    finally:
        await ex.close()


async def test_pools_pin_to_node_types_and_unplaceable_pools_fail_fast(ray_session: None) -> None:
    from orchestrator import WorkerUnavailable

    ex = RayExecutor()
    try:
        await ex.ensure_pool(PoolSpec("pinned", SudokuExactSolver, PoolOptions(num_cpus=0, resources={"cpu_node": 0.5})))
        assert ex.pool_info("pinned")[0]["device"] == "cpu"
    finally:
        await ex.close()
    impatient = RayExecutor(place_timeout_s=5.0)
    t0 = time.monotonic()
    with pytest.raises(WorkerUnavailable, match="could not be placed.*tpu_node"):
        await impatient.ensure_pool(PoolSpec("nowhere", SudokuExactSolver, PoolOptions(num_cpus=0, resources={"tpu_node": 1})))
    assert time.monotonic() - t0 < 30  # a clear error, never a hang


async def test_killed_actors_lose_no_step_and_answer_none_twice(ray_session: None) -> None:
    import ray

    reg = default_registry()
    skill = sudoku_skill()
    skill.ladder = [Tier("paced", PacedSolver, "tiny", PoolOptions(replicas=2, num_cpus=0, max_batch=8, max_wait_ms=1))]
    skill.fallback = None
    reg.register(skill)
    ex = RayExecutor(backoff_s=0.05)
    fleet = Fleet(registry=reg, executor=ex, policy=Policy(final="none"))
    items = sudoku_items(4, 500, seed=21)
    plan = Plan(steps=[Step(id=f"s{k}", skill="sudoku.solve", inputs=i) for k, i in enumerate(items)], output=[f"s{k}" for k in range(500)])
    pool = skill.ladder[0].pool_name
    await ex.ensure_pool(PoolSpec(pool, skill.ladder[0].worker, skill.ladder[0].pool))

    async def killer() -> int:
        kills = 0
        rng = random.Random(0)
        for _ in range(3):
            await asyncio.sleep(rng.uniform(0.2, 0.6))
            ray.kill(rng.choice(ex.actor_handles(pool)), no_restart=False)
            kills += 1
        return kills

    run = asyncio.ensure_future(fleet.run(Task(goal="fault drill"), plan=plan))
    kills = await killer()
    report = await run
    await fleet.close()
    assert kills == 3
    assert report.status == "succeeded", report.error
    assert report.totals.verified == 500
    for step, item in zip(report.steps, items, strict=True):
        assert len(step.trials) == 1  # answered exactly once
        assert sudoku.check_solution(item["puzzle"], step.output["solution"]) is None  # type: ignore[index]
    assert report.totals.resends >= 1
    assert ex.stats.resends >= 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_ray_job_submit_runs_a_task_on_a_local_head(tmp_path: Path) -> None:
    bindir = Path(sys.executable).parent
    ray_bin = str(bindir / "ray")
    port, dash = _free_port(), _free_port()
    # Ray's unix socket paths must stay under ~107 bytes: pytest's tmp_path is too deep
    ray_tmp = tempfile.mkdtemp(prefix="tfray", dir="/tmp")
    # token auth is on by default for local clusters: share one token with the head and the CLI
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": os.urandom(16).hex()}
    env.pop("RAY_ADDRESS", None)
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"  # `python` in the job is this venv's
    head = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", f"--port={port}", "--num-cpus=2", "--include-dashboard=true",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--temp-dir={ray_tmp}",
         "--min-worker-port=21000", "--max-worker-port=21999",
         # the test session's own Ray runs on this machine too: give every listener of this
         # head a free port, or its dashboard agent cannot bind and jobs find no agent
         f"--dashboard-agent-listen-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}",
         f"--runtime-env-agent-port={_free_port()}", f"--metrics-export-port={_free_port()}",
         f"--ray-client-server-port={_free_port()}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        task = {"skill": "sudoku.solve", "inputs": {"items": sudoku_items(6, 8, seed=31)}}
        task_file = tmp_path / "task.json"
        task_file.write_text(json.dumps(task))
        address = f"http://127.0.0.1:{dash}"
        deadline = time.monotonic() + 240  # a loaded 2-core machine can take minutes to bring up the job agent
        out = None
        while time.monotonic() < deadline:
            out = subprocess.run(
                [ray_bin, "job", "submit", "--address", address, "--working-dir", str(ROOT),
                 "--", "python", "-m", "orchestrator", "run", str(task_file), "--json", "--journal", str(tmp_path / "j.sqlite")],
                env=env, capture_output=True, text=True, timeout=240,
            )
            said = out.stderr + out.stdout
            # the head is still starting: its dashboard or job agent is not up yet
            starting = ("Connection refused", "Failed to connect", "No available agent", "try again later")
            if out.returncode == 0 or not any(s in said for s in starting):
                break
            time.sleep(3)
        assert out is not None
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        text = out.stdout
        report = json.loads(text[text.index("{"): text.rindex("}") + 1])
        assert report["status"] == "succeeded"
        assert report["executor"] == "ray"
        assert report["totals"]["verified"] == 8
        assert "succeeded" in text.lower()
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)


async def test_a_pool_with_no_live_actor_gives_up_after_max_resends(ray_session: None) -> None:
    """The re-send loop (tenacity) tries max_resends more times, counts every failed send per
    item, and then says so as WorkerUnavailable, never a hang."""
    import ray

    from orchestrator import WorkerUnavailable
    from workers import Job

    ex = RayExecutor(max_resends=2, backoff_s=0.01)
    try:
        await ex.ensure_pool(PoolSpec("doomed", SudokuExactSolver, PoolOptions(num_cpus=0, replicas=1)))
        (handle,) = ex.actor_handles("doomed")
        ray.kill(handle, no_restart=True)
        item = sudoku_items(4, 1, 0)[0]
        with pytest.raises(WorkerUnavailable, match=r"pool 'doomed': no live actor answered a batch of 1 after 2 re-sends"):
            await ex.submit("doomed", Job(sudoku.SudokuInput.model_validate(item)))
        assert ex.stats.resends == 3  # the first send and both re-sends failed, one item each
    finally:
        await ex.close()
