"""The executor seam: where jobs meet workers.

An executor hosts one *pool* per worker kind and answers ``submit(pool, job)`` with an
Attempt, batching concurrent submissions itself. ``LocalExecutor`` runs workers in this
process (one thread per pool); ``RayExecutor`` (``orchestrator.ray_executor``) runs them in
Ray actors. Both pass the same executor test suite.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

from pydantic import ValidationError

from orchestrator.batching import Batcher
from tinyfleet_core.errors import ConfigError, WorkerError
from tinyfleet_core.models import Attempt
from workers.base import Job, PoolOptions, Worker

_log = logging.getLogger(__name__)

__all__ = ["Executor", "ExecutorEvent", "PoolSpec", "LocalExecutor", "run_worker_batch", "ExecutorStats"]


@dataclass(frozen=True)
class PoolSpec:
    """A pool to host: its name, how to build its worker, and how to deploy it."""

    name: str
    worker: Callable[[], Worker]
    options: PoolOptions = field(default_factory=PoolOptions)


ExecutorEventKind = Literal["connecting", "connected", "pool_starting", "pool_ready", "pool_inlined"]


@dataclass(frozen=True)
class ExecutorEvent:
    """Something an executor did outside any step: connecting to Ray, starting a pool.
    ``seconds``: how long it took (for the ``connected`` / ``pool_ready`` kinds)."""

    kind: ExecutorEventKind
    message: str
    pool: str | None = None
    seconds: float = 0.0


Listener = Callable[[ExecutorEvent], None]


@dataclass
class ExecutorStats:
    batches: int = 0
    items: int = 0
    resends: int = 0


def run_worker_batch(worker: Worker, jobs: Sequence[Job]) -> list[Attempt]:
    """Call ``worker.solve_batch`` and check what came back: one Attempt per job.

    Raises WorkerError (naming the worker) when the worker raises or returns the wrong shape.
    Wall time is spread over the attempts that did not report their own."""
    t0 = time.perf_counter()
    try:
        out = worker.solve_batch(list(jobs))
    except Exception as e:  # noqa: BLE001 - converted into a named, typed error
        raise WorkerError(f"worker {worker.name!r} raised {type(e).__name__}: {e}") from e
    dt = time.perf_counter() - t0
    if not isinstance(out, list) or len(out) != len(jobs):
        got = len(out) if isinstance(out, list) else type(out).__name__
        raise WorkerError(f"worker {worker.name!r} returned {got} answers for {len(jobs)} jobs; it must return one Attempt per job")
    checked: list[Attempt] = []
    for k, a in enumerate(out):
        if not isinstance(a, Attempt):
            try:
                a = Attempt.model_validate(a)
            except ValidationError:
                raise WorkerError(
                    f"worker {worker.name!r} returned {type(a).__name__} for job {k}; it must return Attempt objects"
                ) from None
        if a.cost.worker_s == 0.0:
            a.cost.worker_s = dt / len(jobs)  # a fresh attempt of this batch: safe to fill in
        checked.append(a)
    return checked


class Executor(ABC):
    """Hosts pools of workers and answers jobs."""

    name: str = "executor"

    def __init__(self) -> None:
        self.stats = ExecutorStats()
        self.listeners: list[Listener] = []
        self._warming: set[asyncio.Future[None]] = set()

    async def start(self) -> None:
        """Connect to where the pools will run (idempotent); a Fleet calls it before planning,
        so a bad address fails at once. The local executor has nothing to connect to."""
        return None

    def lost_nodes_since(self, t0: float) -> list[str]:
        """Cluster nodes that hosted this executor's pools and were lost at or after ``t0``
        (``time.monotonic()``); an executor without nodes loses none."""
        return []

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with every :class:`ExecutorEvent` (pool start-up, Ray connection)."""
        self.listeners.append(listener)

    def _notify(self, kind: ExecutorEventKind, message: str, pool: str | None = None, seconds: float = 0.0) -> None:
        event = ExecutorEvent(kind, message, pool, seconds)
        for listener in self.listeners:  # a broken listener (a display) never breaks a pool start
            try:
                listener(event)
            except Exception as e:  # noqa: BLE001
                _log.warning("executor listener %r raised on %s: %s", listener, kind, e)

    @abstractmethod
    async def ensure_pool(self, spec: PoolSpec) -> None:
        """Start the pool if it is not running yet (idempotent)."""

    @abstractmethod
    async def submit(self, pool: str, job: Job) -> Attempt:
        """Answer one job on ``pool``; concurrent submissions are batched."""

    def warm(self, spec: PoolSpec, on_error: Callable[[BaseException], None] | None = None) -> None:
        """Start the pool in the background (a run warms every tier its steps may climb to, so
        no pool start waits on a first escalation). The start outlives the run that asked for
        it (the pool serves later runs of this executor); :meth:`close` stops starts still
        going. ``on_error`` hears a start that failed."""
        if spec.name in self.pools():
            return

        async def start() -> None:
            try:
                await self.ensure_pool(spec)
            except asyncio.CancelledError:
                raise
            except BaseException as e:  # noqa: BLE001 - a warm-up never breaks a run; a step that needs the pool sees it
                if on_error is not None:
                    on_error(e)

        fut = asyncio.ensure_future(start())
        self._warming.add(fut)
        fut.add_done_callback(self._warming.discard)

    async def _stop_warming(self) -> None:
        """Cancel pool starts still going (for :meth:`close`, before the pools stop)."""
        pending = list(self._warming)
        for f in pending:
            f.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def submit_many(self, pool: str, jobs: Sequence[Job]) -> list[Attempt | BaseException]:
        return list(await asyncio.gather(*(self.submit(pool, j) for j in jobs), return_exceptions=True))

    @abstractmethod
    async def close(self) -> None:
        """Stop every pool."""

    def pools(self) -> list[str]:
        return []


class _LocalPool:
    """``replicas`` worker instances in this process, each with its own thread (workers need
    not be thread-safe), fed by one dynamic batcher."""

    def __init__(self, spec: PoolSpec, stats: ExecutorStats | None = None) -> None:
        self.spec = spec
        self.stats = stats or ExecutorStats()
        n = max(1, spec.options.replicas)
        self.workers: list[Worker] = []
        for _ in range(n):
            w = spec.worker()
            w.setup("cpu")
            self.workers.append(w)
        self.thread = ThreadPoolExecutor(max_workers=n, thread_name_prefix=f"pool-{spec.name}")
        self._free: asyncio.Queue[Worker] | None = None
        self.batcher: Batcher[Job, Attempt] = Batcher(
            self._run, max_batch=spec.options.max_batch, max_wait_ms=spec.options.max_wait_ms, concurrency=n, spread=n
        )

    async def _run(self, jobs: list[Job]) -> list[Attempt]:
        loop = asyncio.get_running_loop()
        if self._free is None:
            self._free = asyncio.Queue()
            for w in self.workers:
                self._free.put_nowait(w)
        free = self._free
        worker = await free.get()  # waits while every worker is busy (e.g. on a timed-out batch)
        self.stats.batches += 1
        fut = loop.run_in_executor(self.thread, run_worker_batch, worker, jobs)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), self.spec.options.timeout_s)
        except TimeoutError:
            raise WorkerError(
                f"worker {worker.name!r} took longer than {self.spec.options.timeout_s:g} s on a batch of {len(jobs)}; "
                "raise the pool's timeout_s or shrink max_batch"
            ) from None
        finally:
            # a worker still busy on a timed-out batch returns to the free list when it finishes
            fut.add_done_callback(lambda _: free.put_nowait(worker))


class LocalExecutor(Executor):
    """Runs workers in this process: one thread and one dynamic batcher per pool."""

    name = "local"

    def __init__(self) -> None:
        super().__init__()
        self._pools: dict[str, _LocalPool] = {}
        self._starting: dict[str, asyncio.Future[_LocalPool]] = {}

    async def ensure_pool(self, spec: PoolSpec) -> None:
        """Build the pool once, in a thread; concurrent callers (runs, warm-ups) of one pool
        wait on the same start, and pools of different workers start side by side."""
        if spec.name in self._pools:
            return
        starting = self._starting.get(spec.name)
        if starting is None:
            starting = asyncio.ensure_future(self._build(spec))
            self._starting[spec.name] = starting
            starting.add_done_callback(lambda f, name=spec.name: self._start_done(name, f))
        await asyncio.shield(starting)

    def _start_done(self, name: str, fut: asyncio.Future[_LocalPool]) -> None:
        self._starting.pop(name, None)
        if not fut.cancelled():
            fut.exception()  # retrieved here: a caller that was cancelled meanwhile never reads it

    async def _build(self, spec: PoolSpec) -> _LocalPool:
        t0 = time.monotonic()
        self._notify("pool_starting", f"starting pool {spec.name}", spec.name)
        pool = await asyncio.to_thread(_LocalPool, spec, self.stats)
        self._pools[spec.name] = pool
        self._notify("pool_ready", f"pool {spec.name} ready", spec.name, time.monotonic() - t0)
        return pool

    async def submit(self, pool: str, job: Job) -> Attempt:
        try:
            p = self._pools[pool]
        except KeyError:
            raise ConfigError(f"no pool named {pool!r}; call ensure_pool first") from None
        attempt = await p.batcher.submit(job)
        self.stats.items += 1
        return attempt

    async def submit_many(self, pool: str, jobs: Sequence[Job]) -> list[Attempt | BaseException]:
        try:
            p = self._pools[pool]
        except KeyError:
            raise ConfigError(f"no pool named {pool!r}; call ensure_pool first") from None
        got = await p.batcher.submit_many(list(jobs))
        self.stats.items += len(jobs)
        return got

    def pools(self) -> list[str]:
        return list(self._pools)

    async def close(self) -> None:
        await self._stop_warming()
        for p in self._pools.values():
            await p.batcher.aclose()
            p.thread.shutdown(wait=False, cancel_futures=True)
        self._pools.clear()
