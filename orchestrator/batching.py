"""Dynamic batching: many concurrent ``submit(job)`` calls become few ``run_batch(jobs)`` calls.

The first job to arrive opens a batch; the batch closes when it holds ``max_batch`` jobs or
``max_wait_ms`` has passed, then runs while the next batch fills. Jobs that would fill less than
a batch per free lane (``spread``: a pool's replicas) are shared out evenly over those lanes. At most ``concurrency``
batches run at once; further jobs wait in the queue (backpressure: for a Ray pool, a batch
running is one Ray call in flight, so a pool never has more than ``concurrency`` calls out,
however many jobs are queued). The queue is a deque: taking a batch off it costs the batch's
size, not the queue's, so 100,000 queued jobs cost no more per job than 100. The one batching
layer of a pool: the local executor's, and the Ray router's in the driver (a Ray pool's actor
runs each batch it is handed as it is).

``queued`` says how many jobs wait.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

J = TypeVar("J")
R = TypeVar("R")

__all__ = ["Batcher"]


class Batcher(Generic[J, R]):
    def __init__(
        self,
        run_batch: Callable[[list[J]], Awaitable[Sequence[R]]],
        *,
        max_batch: int = 64,
        max_wait_ms: float = 2.0,
        concurrency: int = 1,
        spread: int = 1,
    ) -> None:
        if max_batch < 1 or concurrency < 1:
            raise ValueError("max_batch and concurrency must be >= 1")
        self._run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max(0.0, max_wait_ms) / 1000.0
        self.concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._free = concurrency  # slots not running a batch (the semaphore's count, readable)
        self.spread = max(1, spread)  # lanes that run in parallel (a pool's replicas)
        self._queue: deque[tuple[J, asyncio.Future[R]]] = deque()
        self._wake = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.items = 0

    @property
    def queued(self) -> int:
        """Jobs waiting for a batch."""
        return len(self._queue)

    async def submit(self, job: J) -> R:
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((job, fut))
        self._wake.set()
        if self._pump is None or self._pump.done():
            self._pump = asyncio.ensure_future(self._pump_loop())
        return await fut

    async def submit_many(self, jobs: Sequence[J]) -> list[R | BaseException]:
        """Queue ``jobs`` together (they share batches with every other submitter's) and wait for
        all of them: one future per job and no task per job, so handing a pool many jobs at
        once costs the driver little more than handing it one. A job whose batch failed gets
        the exception in its place."""
        loop = asyncio.get_running_loop()
        futs: list[asyncio.Future[R]] = [loop.create_future() for _ in jobs]
        self._queue.extend(zip(jobs, futs, strict=True))
        self._wake.set()
        if self._pump is None or self._pump.done():
            self._pump = asyncio.ensure_future(self._pump_loop())
        try:
            return list(await asyncio.gather(*futs, return_exceptions=True))
        except asyncio.CancelledError:
            for f in futs:
                f.cancel()
            raise

    async def _pump_loop(self) -> None:
        while self._queue:
            await self._slots.acquire()
            self._free -= 1
            if self.max_wait_s > 0 and len(self._queue) < self.max_batch:
                deadline = asyncio.get_running_loop().time() + self.max_wait_s
                while len(self._queue) < self.max_batch:
                    left = deadline - asyncio.get_running_loop().time()
                    if left <= 0:
                        break
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), left)
                    except TimeoutError:
                        break
            else:
                await asyncio.sleep(0)  # let jobs submitted in this tick join the batch
            # a queue shorter than a full batch per free lane is shared out evenly over the free
            # lanes (a pool's replicas run in parallel: 200 slow jobs go to two replicas as
            # 2 x 100, not as one batch of 200 beside an idle replica)
            running = self.concurrency - self._free - 1  # batches already out (this one not counted)
            lanes = max(1, self.spread - running)
            size = min(self.max_batch, max(1, -(-len(self._queue) // lanes)))
            taken = [self._queue.popleft() for _ in range(size)]
            batch = [(j, f) for j, f in taken if not f.cancelled()]
            if not batch:
                self._release()
                continue
            task = asyncio.ensure_future(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[tuple[J, asyncio.Future[R]]]) -> None:
        try:
            self.batches += 1
            self.items += len(batch)
            try:
                results = await self._run_batch([j for j, _ in batch])
            except BaseException as e:  # every waiter must hear about the failure
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e if isinstance(e, Exception) else RuntimeError(repr(e)))
                if not isinstance(e, Exception):
                    raise
                return
            if len(results) != len(batch):
                err = RuntimeError(f"batch of {len(batch)} jobs returned {len(results)} results")
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(err)
                return
            for (_, fut), res in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(res)
        finally:
            self._release()

    def _release(self) -> None:
        self._free += 1
        self._slots.release()

    async def aclose(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
        for t in list(self._running):
            t.cancel()
        for _, fut in self._queue:
            if not fut.done():
                fut.cancel()
        self._queue.clear()
