"""One executor test suite, run on both LocalExecutor and RayExecutor (shared Ray session)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from helpers import sudoku_items

from orchestrator import Attempt, Executor, PoolSpec, WorkerError
from workers import Job, PoolOptions, Worker
from workers.kits import sudoku
from workers.kits.classic import SudokuExactSolver


class EchoWorker(Worker):
    """Answers each job with its particle number and the size of the batch it came in."""

    name = "test.echo"
    skill = "sudoku.solve"

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        return [self.attempt(None, 0.0, job=j, batch=len(jobs), key=j.key) for j in jobs]


class ShortWorker(Worker):
    name = "test.short"
    skill = "sudoku.solve"

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        return []


class RaisingWorker(Worker):
    name = "test.raising"
    skill = "sudoku.solve"

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        raise ValueError("bad weights")


class HangingWorker(Worker):
    name = "test.hanging"
    skill = "sudoku.solve"

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        import time

        time.sleep(5)
        return []


POOL = PoolOptions(num_cpus=0, max_batch=64, max_wait_ms=5)


def job(k: int) -> Job:
    return Job(sudoku.SudokuInput.model_validate(sudoku_items(4, 1, k)[0]), particle=k, key=f"j{k}")


async def test_answers_every_job_in_order(executor: Executor) -> None:
    await executor.ensure_pool(PoolSpec("exact", SudokuExactSolver, POOL))
    items = sudoku_items(6, 40, seed=3)
    jobs = [Job(sudoku.SudokuInput.model_validate(i), key=str(k)) for k, i in enumerate(items)]
    got = await asyncio.gather(*(executor.submit("exact", j) for j in jobs))
    for item, a in zip(items, got, strict=True):
        assert a.worker == "sudoku.exact"
        assert sudoku.check_solution(item["puzzle"], a.output["solution"]) is None  # type: ignore[index]


async def test_concurrent_submissions_are_batched(executor: Executor) -> None:
    await executor.ensure_pool(PoolSpec("echo", EchoWorker, POOL))
    got = await asyncio.gather(*(executor.submit("echo", job(k)) for k in range(100)))
    assert [a.info["key"] for a in got] == [f"j{k}" for k in range(100)]
    assert max(a.info["batch"] for a in got) >= 32
    assert sum(1 for a in got if a.info["batch"] == 1) < 10


async def test_ensure_pool_is_idempotent(executor: Executor) -> None:
    spec = PoolSpec("echo", EchoWorker, POOL)
    await asyncio.gather(executor.ensure_pool(spec), executor.ensure_pool(spec))
    await executor.ensure_pool(spec)
    assert executor.pools().count("echo") == 1


@pytest.mark.parametrize(
    "worker, match",
    [(ShortWorker, "returned 0 answers for 1 jobs"), (RaisingWorker, "raised ValueError: bad weights")],
)
async def test_broken_workers_give_named_worker_errors(executor: Executor, worker: type[Worker], match: str) -> None:
    await executor.ensure_pool(PoolSpec(worker.name, worker, POOL))
    with pytest.raises(WorkerError, match=match) as e:
        await executor.submit(worker.name, job(0))
    assert worker.name in str(e.value)


async def test_a_hanging_worker_hits_the_pool_deadline(executor: Executor) -> None:
    opts = PoolOptions(num_cpus=0, timeout_s=0.5)
    await executor.ensure_pool(PoolSpec("hang", HangingWorker, opts))
    with pytest.raises(WorkerError, match="longer than 0.5 s"):
        await executor.submit("hang", job(0))
