"""The one batching layer (orchestrator/batching.py): many submitters become few batches, in
order, with backpressure, failures in place, and a short queue spread over parallel lanes."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.batching import Batcher


class Recorder:
    def __init__(self, delay: float = 0.0, fail_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.running = 0
        self.most_running = 0
        self.delay = delay
        self.fail_on = fail_on

    async def __call__(self, jobs: list[int]) -> list[int]:
        self.batches.append(list(jobs))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await asyncio.sleep(self.delay)
            if self.fail_on is not None and self.fail_on in jobs:
                raise ValueError(f"job {self.fail_on} broke its batch")
            return [j * 10 for j in jobs]
        finally:
            self.running -= 1


async def test_concurrent_submitters_become_few_batches_of_at_most_max_batch() -> None:
    rec = Recorder()
    b = Batcher(rec, max_batch=16, max_wait_ms=5.0)
    got = await asyncio.gather(*(b.submit(k) for k in range(100)))
    assert got == [k * 10 for k in range(100)]
    assert all(len(x) <= 16 for x in rec.batches) and len(rec.batches) == 7  # ceil(100 / 16)
    assert sorted(j for x in rec.batches for j in x) == list(range(100))


async def test_submit_many_answers_in_order_and_shares_batches_with_other_submitters() -> None:
    rec = Recorder()
    b = Batcher(rec, max_batch=64, max_wait_ms=5.0)
    many, one = await asyncio.gather(b.submit_many(list(range(40))), b.submit(99))
    assert many == [k * 10 for k in range(40)] and one == 990
    assert len(rec.batches) == 1 and sorted(rec.batches[0]) == [*range(40), 99]


async def test_a_failed_batch_gives_its_jobs_the_error_in_place_and_the_others_their_answers() -> None:
    rec = Recorder(fail_on=70)
    b = Batcher(rec, max_batch=32, max_wait_ms=0.0)
    got = await b.submit_many(list(range(96)))
    failed = [k for k, g in enumerate(got) if isinstance(g, BaseException)]
    assert failed == list(range(64, 96))  # the third batch held job 70
    assert all(isinstance(got[k], ValueError) for k in failed) and got[:64] == [k * 10 for k in range(64)]


async def test_backpressure_never_runs_more_batches_than_concurrency() -> None:
    rec = Recorder(delay=0.02)
    b = Batcher(rec, max_batch=4, max_wait_ms=0.0, concurrency=3)
    await b.submit_many(list(range(60)))
    assert rec.most_running == 3


@pytest.mark.parametrize("spread, sizes", [(1, [200]), (2, [100, 100]), (4, [50, 50, 50, 50])])
async def test_a_short_queue_is_spread_evenly_over_the_free_lanes(spread: int, sizes: list[int]) -> None:
    rec = Recorder(delay=0.02)
    b = Batcher(rec, max_batch=256, max_wait_ms=0.0, concurrency=4, spread=spread)
    await b.submit_many(list(range(200)))
    assert [len(x) for x in rec.batches] == sizes
    assert rec.most_running == len(sizes)


async def test_a_long_queue_still_fills_whole_batches() -> None:
    rec = Recorder(delay=0.01)
    b = Batcher(rec, max_batch=64, max_wait_ms=0.0, concurrency=2, spread=2)
    await b.submit_many(list(range(512)))
    assert [len(x) for x in rec.batches[:6]] == [64] * 6


async def test_cancelling_submit_many_drops_its_queued_jobs() -> None:
    rec = Recorder(delay=0.05)
    b = Batcher(rec, max_batch=8, max_wait_ms=0.0, concurrency=1)
    task = asyncio.ensure_future(b.submit_many(list(range(64))))
    await asyncio.sleep(0.01)  # the first batch runs; 56 jobs wait
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)
    assert sum(len(x) for x in rec.batches) <= 16  # at most the batch that was running and one more
    await b.aclose()
