"""``RayExecutor``: pools of long-lived, batching worker actors on Ray.

One pool per worker kind; each pool is N async actors that build their worker once
(``setup(device)``, so models load once) and run each batch they are handed. A router in the
driver's event loop batches jobs per pool (the one batching layer), sends each batch to the
actor with the fewest calls in flight, and applies the pool's deadline.

Backpressure: a pool has at most ``replicas x max_concurrency`` Ray calls in flight
(:attr:`~workers.base.PoolOptions.max_concurrency`, default 4, is the batches in flight per
replica; a semaphore per actor and the driver batcher's concurrency both hold it), so at
most ``replicas x max_concurrency x max_batch`` items are in Ray at once. Every other job
waits in the driver's batcher queue as a job and a future, not as a Ray call: a batch of
100,000 items is at most 8 calls out on a 2-replica pool. :meth:`RayExecutor.pool_load` reads
the calls in flight, the most there ever were, the bound and the queue.

Faults: actors restart (``max_restarts``); a batch whose actor died is re-sent to a live
actor (the work is idempotent and only the first successful reply is used, so no item is
lost or answered twice); unavailability backs off. Ray's exceptions stop here: callers see
WorkerError / WorkerUnavailable only. Re-sends are counted per item in ``Attempt.info``.

Placement: a pool's ``num_cpus``/``num_gpus``/``resources`` become actor options. A GPU pool
on a cluster with no GPU falls back to CPU with one warning. On a local Ray started by this
executor, pools run unreserved (``num_cpus=0``): with one node and no autoscaler a CPU
reservation cannot add cores, it can only leave pools pending when several start at once. On
an attached cluster with CPUs, a pool's request is sized from ``ray.cluster_resources()``
(:func:`fit_cpus`: at most 1/16 of the cluster's CPUs per actor, less when few are free), so a
whole ladder's pools fit a 2-CPU head; a cluster with no free CPU at all is an error at once.
A cluster that reports no CPU (an autoscaler's CPU-less head) keeps the request as asked: the
autoscaler adds nodes, and ``place_timeout_s`` bounds the wait.

Starting or attaching to Ray (addresses, the local ``ray start`` head, tokens, signals) is
:mod:`orchestrator.ray_connect`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from orchestrator.batching import Batcher
from orchestrator.cheap_tiers import PROBE_BATCHES, CostProbe, may_inline
from orchestrator.executor import Executor, PoolSpec, _LocalPool, run_worker_batch
from orchestrator.placement import MIN_CPUS, POOL_SLOTS, fit_cpus  # noqa: F401  (moved; kept importable from here)
from orchestrator.placement import can_host as _can_host
from orchestrator.ray_connect import (
    RayTarget,
    _init_ray,
    _ray_message,
    connection_text,
    ensure_ray,
    resolve_address,
    started_locally,
)
from tinyfleet_core.errors import ConfigError, TinyfleetError, WorkerError, WorkerUnavailable
from tinyfleet_core.models import Attempt
from workers.base import Job, PoolOptions, Worker

__all__ = ["RayExecutor", "PoolActor", "PoolLoad", "RayTarget", "ensure_ray", "resolve_address", "fit_cpus"]

log = logging.getLogger("tinyfleet.ray")
_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        log.warning(message)


class PoolActor:
    """The body of a pool's Ray actor: builds the worker once, answers each batch it is handed.

    Batching happens once, in the driver's router (:class:`~orchestrator.batching.Batcher`);
    the actor runs every batch as it comes, on one thread, so a forward pass never blocks the
    actor's event loop and the next batch can arrive (and be unpickled) while one runs."""

    def __init__(self, factory: Callable[[], Worker], max_batch: int, max_wait_ms: float) -> None:
        self.device, self.note = _pick_device()
        self.worker = factory()
        self.worker.setup(self.device)
        self._thread = ThreadPoolExecutor(max_workers=1)

    async def solve(self, jobs: list[Job]) -> list[Attempt]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, run_worker_batch, self.worker, jobs)

    def info(self) -> dict[str, Any]:
        import ray

        return {
            "pid": os.getpid(),
            "device": self.device,
            "worker": self.worker.name,
            "node": ray.get_runtime_context().get_node_id(),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "note": self.note,
        }


def _pick_device() -> tuple[str, str]:
    """(device, note): CUDA when Ray gave this actor a GPU and torch can see one; else CPU,
    with a note saying why when a GPU was asked for."""
    import ray

    if not ray.get_gpu_ids():
        return "cpu", ""
    try:
        import torch
    except ImportError:
        return "cpu", "this actor holds a GPU from Ray but torch is not installed; running on CPU"
    if torch.cuda.is_available():
        return "cuda", ""
    return "cpu", "an actor holds a GPU from Ray but torch sees no CUDA device; GPU pools run on CPU"


@dataclass
class _ActorSlot:
    handle: Any
    sem: asyncio.Semaphore
    inflight: int = 0


@dataclass(frozen=True)
class PoolLoad:
    """How loaded a Ray pool is: Ray calls (batches) in flight now, the most that were ever in
    flight at once, the bound they never exceed (``replicas x max_concurrency``), jobs waiting
    in the driver's queue, and batches sent so far (re-sends included)."""

    in_flight: int
    peak_in_flight: int
    bound: int
    queued: int
    batches: int


@dataclass
class _RayPool:
    spec: PoolSpec
    options: PoolOptions
    actors: list[_ActorSlot] = field(default_factory=list)
    in_flight: int = 0  # Ray calls out now (solve.remote sent, no reply yet)
    peak_in_flight: int = 0
    calls: int = 0
    batcher: Batcher[Job, Attempt] | None = None
    info: list[dict[str, Any]] = field(default_factory=list)
    probe: CostProbe = field(default_factory=CostProbe)
    inline: _LocalPool | None = None  # set when the pool moved into the driver (cheap_tiers.py)


class RayExecutor(Executor):
    """Pools of batched worker actors on a local or remote Ray cluster."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        max_resends: int = 8,
        place_timeout_s: float = 120.0,
        backoff_s: float = 0.2,
    ) -> None:
        super().__init__()
        self.address = address
        self.max_resends = max_resends
        self.place_timeout_s = place_timeout_s
        self.backoff_s = backoff_s
        self._pools: dict[str, _RayPool] = {}
        self._local: dict[str, _LocalPool] = {}
        self._starting: dict[str, asyncio.Future[None]] = {}
        self.lost_nodes: list[str] = []
        """Ray node ids that hosted this executor's pool actors and were lost (in loss order)."""
        self._lost_pools: dict[str, str] = {}  # pool -> why its steps climb past it (no node of its type left)
        self._node_watch: asyncio.Task[None] | None = None
        self._lost_at: dict[str, float] = {}  # node id -> when its loss was seen (time.monotonic())

    # ------------------------------------------------------------------ pools

    async def start(self) -> None:
        """Start or attach to Ray now (see :func:`ensure_ray`): ConfigError for a bad or
        unreachable address, before any step is planned."""
        import ray

        if ray.is_initialized():
            return
        t0 = time.monotonic()
        target = resolve_address(self.address)
        self._notify("connecting", "starting a local Ray" if target is None else f"attaching to Ray at {target.host}:{target.port}")
        _init_ray(target)
        self._notify("connected", connection_text(), seconds=time.monotonic() - t0)

    async def ensure_pool(self, spec: PoolSpec) -> None:
        if spec.name in self._lost_pools:
            raise WorkerUnavailable(self._lost_pools[spec.name])
        if spec.name in self._pools or spec.name in self._local:
            return
        if spec.name in self._starting:
            await asyncio.shield(self._starting[spec.name])
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._starting[spec.name] = fut
        t0 = time.monotonic()
        self._notify("pool_starting", f"starting pool {spec.name}", spec.name)
        try:
            if spec.options.inline:
                self._local[spec.name] = await asyncio.to_thread(_LocalPool, spec, self.stats)
            else:
                await self._start_pool(spec)
            fut.set_result(None)
            self._notify("pool_ready", f"pool {spec.name} ready", spec.name, time.monotonic() - t0)
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # mark retrieved
            raise
        finally:
            del self._starting[spec.name]

    def _placement(self, opts: PoolOptions) -> PoolOptions:
        import ray

        total = ray.cluster_resources()
        if opts.num_gpus > 0 and total.get("GPU", 0) == 0:
            _warn_once(
                "gpu-fallback",
                f"the Ray cluster has no GPU; GPU pools run on CPU instead (asked num_gpus={opts.num_gpus})",
            )
            opts = replace(opts, num_gpus=0.0)
        if started_locally() and opts.num_cpus > 0:
            # One local node and no autoscaler: CPU reservations cannot add cores, they can only
            # leave pools pending when several start at once. Run pools unreserved; every worker
            # pins its own thread count.
            return replace(opts, num_cpus=0.0)
        if opts.num_cpus > 0 and total.get("CPU", 0) > 0:
            free = ray.available_resources().get("CPU", 0.0)
            opts = replace(opts, num_cpus=fit_cpus(opts.num_cpus, max(1, opts.replicas), total["CPU"], free))
        return opts

    async def _start_pool(self, spec: PoolSpec) -> None:
        import ray

        # Ray's start must run on the main thread (it installs signal handlers).
        await self.start()
        opts = self._placement(spec.options)
        actor_cls = ray.remote(PoolActor)
        handles = [
            actor_cls.options(
                num_cpus=opts.num_cpus,
                num_gpus=opts.num_gpus,
                resources=dict(opts.resources) or None,
                max_restarts=3,
                max_task_retries=0,
                max_concurrency=max(2, opts.max_concurrency),
            ).remote(spec.worker, opts.max_batch, opts.max_wait_ms)
            for _ in range(max(1, opts.replicas))
        ]
        placed = asyncio.gather(*(h.info.remote() for h in handles))
        placed.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved, even when cancelled by a stop
        try:
            info = await asyncio.wait_for(placed, self.place_timeout_s)
        except asyncio.CancelledError:  # the run was stopped while the pool was being placed
            for h in handles:
                ray.kill(h, no_restart=True)
            raise
        except TimeoutError:
            for h in handles:
                ray.kill(h, no_restart=True)
            raise WorkerUnavailable(
                f"pool {spec.name!r} could not be placed within {self.place_timeout_s:g} s: it asks for "
                f"num_cpus={opts.num_cpus}, num_gpus={opts.num_gpus}, resources={dict(opts.resources)}; "
                f"the cluster has {ray.cluster_resources()}, free {ray.available_resources()}; add a node with "
                "those resources or lower the pool's request"
            ) from None
        except ray.exceptions.RayError as e:
            raise WorkerUnavailable(f"pool {spec.name!r} failed to start: {_ray_message(e)}") from None
        for note in {i.get("note") for i in info} - {"", None}:
            _warn_once(f"note:{note}", str(note))
        pool = _RayPool(spec, opts, [_ActorSlot(h, asyncio.Semaphore(max(1, opts.max_concurrency))) for h in handles], info=info)
        async def run_batch(jobs: list[Job], p: _RayPool = pool) -> list[Attempt]:
            if p.inline is not None:  # a cheap tier, moved into the driver
                return [a.model_copy(update={"info": {**a.info, "ran_in": "driver"}}) for a in await p.inline._run(jobs)]
            if p.spec.name in self._lost_pools:  # no node of its type is left: climb past at once
                raise WorkerUnavailable(self._lost_pools[p.spec.name])
            t0 = time.perf_counter()
            out = await self._dispatch(p, jobs)
            await self._judge_cost(p, len(jobs), sum(a.cost.worker_s for a in out), time.perf_counter() - t0)
            return out

        pool.batcher = Batcher(
            run_batch,
            max_batch=opts.max_batch,
            max_wait_ms=opts.max_wait_ms,
            concurrency=max(1, opts.replicas) * max(1, opts.max_concurrency),
            spread=max(1, opts.replicas),
        )
        self._pools[spec.name] = pool
        if not started_locally() and (self._node_watch is None or self._node_watch.done()):
            self._node_watch = asyncio.ensure_future(self._watch_nodes())

    # ------------------------------------------------------------------ lost nodes

    async def _watch_nodes(self) -> None:
        """Every :data:`NODE_POLL_S`, look for nodes of the cluster that died while they hosted
        pool actors (:meth:`_node_lost`). Runs while the executor has Ray pools."""
        import ray

        while self._pools and ray.is_initialized():
            await asyncio.sleep(NODE_POLL_S)
            try:
                nodes = await asyncio.to_thread(ray.nodes)
            except (ray.exceptions.RayError, ConnectionError) as e:  # the GCS is restarting: ask again
                log.info("node watch: %s", _ray_message(e))
                continue
            alive = {n["NodeID"]: n.get("Resources", {}) for n in nodes if n.get("Alive")}
            hosted = {i.get("node") for p in self._pools.values() for i in p.info}
            for node_id in sorted(hosted - set(alive) - {None} - set(self.lost_nodes)):
                self._node_lost(str(node_id), alive)

    def _node_lost(self, node_id: str, alive: dict[str, dict[str, float]]) -> None:
        """A node that hosted pool actors is gone. Ray restarts those actors on another node of
        the same type (``max_restarts``) and the batches they held are re-sent; their new place
        is read back in the background. A pool that no live node can host (the last node of its
        type was lost) is given up: its actors there are killed (so no call waits on a restart
        that cannot be placed) and every later batch for it fails at once with
        WorkerUnavailable, so its steps climb past the tier with that reason."""
        import ray

        self.lost_nodes.append(node_id)
        self._lost_at[node_id] = time.monotonic()
        log.warning("Ray node %s was lost; its pool actors restart elsewhere or their tier is climbed past", node_id[:12])
        for name, pool in list(self._pools.items()):
            on_it = [a for a, i in zip(pool.actors, pool.info, strict=False) if i.get("node") == node_id]
            if not on_it:
                continue
            if any(_can_host(pool.options, res) for res in alive.values()):
                asyncio.ensure_future(self._refresh_pool(pool))
                continue
            self._lost_pools[name] = (
                f"pool {name!r} lost its node {node_id[:12]} and no live node of the cluster has what it asks "
                f"(num_gpus={pool.options.num_gpus}, resources={dict(pool.options.resources)}); its tier is climbed past"
            )
            for a in on_it:
                with contextlib.suppress(ray.exceptions.RayError):
                    ray.kill(a.handle, no_restart=True)

    def lost_nodes_since(self, t0: float) -> list[str]:
        return [n for n in self.lost_nodes if self._lost_at.get(n, 0.0) >= t0]

    async def _refresh_pool(self, pool: _RayPool) -> None:
        """Read back where each actor of ``pool`` runs now (after a restart elsewhere)."""
        import ray

        try:
            pool.info = list(await asyncio.wait_for(asyncio.gather(*(a.handle.info.remote() for a in pool.actors)), self.place_timeout_s))
        except (TimeoutError, ray.exceptions.RayError) as e:
            log.info("pool %s: placement not read back: %s", pool.spec.name, _ray_message(e))

    async def refresh_placement(self) -> None:
        """Read back where every pool's actors run now (``pool_info`` is as of their start, or
        of the last node loss)."""
        await asyncio.gather(*(self._refresh_pool(p) for n, p in self._pools.items() if n not in self._lost_pools))

    async def _judge_cost(self, pool: _RayPool, items: int, worker_s: float, wall_s: float) -> None:
        """Measure a pool's first batches; move it into the driver when that pays (cheap_tiers.py)."""
        if pool.inline is not None or pool.probe.batches >= 2 * PROBE_BATCHES or not may_inline(pool.options):
            return
        pool.probe.add(items, worker_s, wall_s)
        why = pool.probe.verdict()
        if why is None or pool.inline is not None:
            return
        try:
            pool.inline = await asyncio.to_thread(_LocalPool, pool.spec, self.stats)
        except Exception as e:  # noqa: BLE001 - it stays on Ray
            log.info("pool %s stays on Ray: its worker did not build in the driver: %s", pool.spec.name, e)
            return
        self._notify("pool_inlined", f"pool {pool.spec.name} runs in the driver from now on: {why}", pool.spec.name)

    def inlined(self) -> list[str]:
        """The Ray pools that moved into the driver because their work is cheap."""
        return [name for name, p in self._pools.items() if p.inline is not None]

    def pools(self) -> list[str]:
        return [*self._pools, *self._local]

    def pool_info(self, name: str) -> list[dict[str, Any]]:
        """Where each actor of a pool runs (pid, node, device, GPU ids)."""
        return list(self._pools[name].info)

    def pool_load(self, name: str) -> PoolLoad:
        """The pool's Ray calls in flight, their peak and bound, and its queue (see the module's
        backpressure note); ConfigError for a pool this executor does not host on Ray."""
        pool = self._pools.get(name)
        if pool is None:
            raise ConfigError(f"no Ray pool named {name!r} (pools: {sorted(self._pools)})")
        bound = max(1, pool.options.replicas) * max(1, pool.options.max_concurrency)
        queued = pool.batcher.queued if pool.batcher is not None else 0
        return PoolLoad(pool.in_flight, pool.peak_in_flight, bound, queued, pool.calls)

    def actor_handles(self, name: str) -> list[Any]:
        """The pool's actor handles (for fault-injection tests and operators)."""
        return [a.handle for a in self._pools[name].actors]

    # ------------------------------------------------------------------ routing

    async def submit(self, pool: str, job: Job) -> Attempt:
        if pool in self._local:
            attempt = await self._local[pool].batcher.submit(job)
        elif pool in self._pools:
            batcher = self._pools[pool].batcher
            assert batcher is not None
            attempt = await batcher.submit(job)
        else:
            raise ConfigError(f"no pool named {pool!r}; call ensure_pool first")
        self.stats.items += 1
        return attempt

    async def submit_many(self, pool: str, jobs: Sequence[Job]) -> list[Attempt | BaseException]:
        if pool in self._local:
            batcher = self._local[pool].batcher
        elif pool in self._pools and self._pools[pool].batcher is not None:
            batcher = self._pools[pool].batcher
        else:
            raise ConfigError(f"no pool named {pool!r}; call ensure_pool first")
        got = await batcher.submit_many(list(jobs))
        self.stats.items += len(jobs)
        return got

    async def _dispatch(self, pool: _RayPool, jobs: list[Job]) -> list[Attempt]:
        """Send a batch to the least busy actor; re-send it (tenacity: at most ``max_resends``
        times, backing off ``backoff_s`` x the attempt number, jittered) while actors die."""

        def backoff(state: RetryCallState) -> float:
            return self.backoff_s * state.attempt_number * (0.5 + random.random())

        def note(state: RetryCallState) -> None:
            err = state.outcome.exception() if state.outcome is not None else None
            log.info("pool %s: batch of %d re-sent after %s", pool.spec.name, len(jobs), type(err).__name__)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_resends + 1),
            retry=retry_if_exception_type(_ActorGone),
            wait=backoff,
            before_sleep=note,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    out = await self._send_once(pool, jobs)
        except _ActorGone as e:
            raise WorkerUnavailable(
                f"pool {pool.spec.name!r}: no live actor answered a batch of {len(jobs)} after {self.max_resends} re-sends; last error: {e}"
            ) from None
        resends = retrying.statistics.get("attempt_number", 1) - 1
        if resends:
            out = [a.model_copy(update={"info": {**a.info, "resends": resends}}) for a in out]
        self.stats.batches += 1
        return out

    async def _send_once(self, pool: _RayPool, jobs: list[Job]) -> list[Attempt]:
        """One try: _ActorGone when the actor died or is unavailable (worth a re-send), a
        typed error for anything else."""
        import ray

        slot = min(pool.actors, key=lambda a: a.inflight)
        slot.inflight += 1
        try:
            async with slot.sem:
                ref = slot.handle.solve.remote(jobs)
                pool.calls += 1
                pool.in_flight += 1
                pool.peak_in_flight = max(pool.peak_in_flight, pool.in_flight)
                try:
                    out: list[Attempt] = await asyncio.wait_for(ref, pool.options.timeout_s)
                except TimeoutError:
                    ray.cancel(ref, force=False)
                    raise WorkerError(
                        f"pool {pool.spec.name!r} took longer than {pool.options.timeout_s:g} s on a batch of {len(jobs)}"
                    ) from None
                finally:
                    pool.in_flight -= 1
        except (ray.exceptions.ActorDiedError, ray.exceptions.ActorUnavailableError, ray.exceptions.RayActorError,
                ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as e:
            self.stats.resends += len(jobs)
            raise _ActorGone(_ray_message(e)) from None
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, TinyfleetError):
                raise cause from None
            raise WorkerError(f"pool {pool.spec.name!r}: {_ray_message(e)}") from None
        finally:
            slot.inflight -= 1
        return out

    async def close(self) -> None:
        import ray

        await self._stop_warming()
        if self._node_watch is not None:
            self._node_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._node_watch
            self._node_watch = None
        for p in self._local.values():
            await p.batcher.aclose()
            p.thread.shutdown(wait=False, cancel_futures=True)
        self._local.clear()
        for rp in self._pools.values():
            if rp.batcher is not None:
                await rp.batcher.aclose()
            if rp.inline is not None:
                rp.inline.thread.shutdown(wait=False, cancel_futures=True)
            if ray.is_initialized():
                for a in rp.actors:
                    try:
                        ray.kill(a.handle, no_restart=True)
                    except ray.exceptions.RayError:  # already gone
                        pass
        self._pools.clear()


NODE_POLL_S = 1.0
"""How often an executor attached to a cluster looks for lost nodes (one ``ray.nodes()`` call)."""


class _ActorGone(Exception):
    """The actor that had a batch died or is unavailable: the batch is re-sent."""
