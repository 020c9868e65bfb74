"""``RayExecutor``: pools of long-lived, batching worker actors on Ray.

One pool per worker kind; each pool is N async actors that build their worker once
(``setup(device)``, so models load once) and merge concurrent calls into batches. A router
in the driver's event loop batches jobs per pool, sends each batch to the actor with the
fewest calls in flight (a semaphore per actor bounds them; the driver batcher's bounded
concurrency is the backpressure), and applies the pool's deadline.

Faults: actors restart (``max_restarts``); a batch whose actor died is re-sent to a live
actor (the work is idempotent and only the first successful reply is used, so no item is
lost or answered twice); unavailability backs off. Ray's exceptions stop here: callers see
WorkerError / WorkerUnavailable only. Re-sends are counted per item in ``Attempt.info``.

Placement: a pool's ``num_cpus``/``num_gpus``/``resources`` become actor options. A GPU pool
on a cluster with no GPU falls back to CPU with one warning. On a local Ray started by this
executor, pools run unreserved (``num_cpus=0``): with one node and no autoscaler a CPU
reservation cannot add cores, it can only leave pools pending when several start at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from orchestrator.batching import Batcher
from orchestrator.executor import Executor, PoolSpec, _LocalPool, run_worker_batch
from tinyfleet_core.errors import ConfigError, TinyfleetError, WorkerError, WorkerUnavailable
from tinyfleet_core.models import Attempt
from workers.base import Job, PoolOptions, Worker

__all__ = ["RayExecutor", "PoolActor", "ensure_ray"]

log = logging.getLogger("tinyfleet.ray")
_warned: set[str] = set()
_init_lock = threading.Lock()
_started_locally = False  # this process started a single-node local Ray (no autoscaler)


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        log.warning(message)


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Start or attach to Ray. Returns True when this call started a local instance.

    With ``address`` (or ``RAY_ADDRESS`` in the environment, as inside ``ray job submit``)
    it attaches and passes no resource arguments; otherwise it starts a local Ray sized to
    this machine, without the dashboard."""
    import ray

    global _started_locally
    with _init_lock:
        if ray.is_initialized():
            return False
        addr = address or os.environ.get("RAY_ADDRESS")
        if addr:
            ray.init(address=addr, logging_level=logging.WARNING, log_to_driver=False)
            return False
        ray.init(
            num_cpus=num_cpus or os.cpu_count() or 1,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,
            configure_logging=False,
        )
        _started_locally = True
        return True


class PoolActor:
    """The body of a pool's Ray actor: builds the worker once, answers batches.

    Concurrent ``solve`` calls are merged by an in-actor batcher, and one thread runs the
    worker, so a forward pass never blocks the actor's event loop."""

    def __init__(self, factory: Callable[[], Worker], max_batch: int, max_wait_ms: float) -> None:
        self.device, self.note = _pick_device()
        self.worker = factory()
        self.worker.setup(self.device)
        self._thread = ThreadPoolExecutor(max_workers=1)
        self._max_batch = max_batch
        self._max_wait_ms = max_wait_ms
        self._batcher: Batcher[Job, Attempt] | None = None

    async def _run(self, jobs: list[Job]) -> list[Attempt]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, run_worker_batch, self.worker, jobs)

    async def solve(self, jobs: list[Job]) -> list[Attempt]:
        if self._batcher is None:
            self._batcher = Batcher(self._run, max_batch=self._max_batch, max_wait_ms=self._max_wait_ms)
        got = await asyncio.gather(*(self._batcher.submit(j) for j in jobs), return_exceptions=True)
        for g in got:
            if isinstance(g, BaseException):
                raise g
        return list(got)  # type: ignore[arg-type]

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


@dataclass
class _RayPool:
    spec: PoolSpec
    options: PoolOptions
    actors: list[_ActorSlot] = field(default_factory=list)
    batcher: Batcher[Job, Attempt] | None = None
    info: list[dict[str, Any]] = field(default_factory=list)


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

    # ------------------------------------------------------------------ pools

    async def ensure_pool(self, spec: PoolSpec) -> None:
        if spec.name in self._pools or spec.name in self._local:
            return
        if spec.name in self._starting:
            await asyncio.shield(self._starting[spec.name])
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._starting[spec.name] = fut
        try:
            if spec.options.inline:
                self._local[spec.name] = await asyncio.to_thread(_LocalPool, spec, self.stats)
            else:
                await self._start_pool(spec)
            fut.set_result(None)
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
        if _started_locally and opts.num_cpus > 0:
            # One local node and no autoscaler: CPU reservations cannot add cores, they can only
            # leave pools pending when several start at once. Run pools unreserved; every worker
            # pins its own thread count.
            opts = replace(opts, num_cpus=0.0)
        return opts

    async def _start_pool(self, spec: PoolSpec) -> None:
        import ray

        # Ray's start must run on the main thread (it installs signal handlers).
        ensure_ray(self.address)
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
        try:
            info = await asyncio.wait_for(asyncio.gather(*(h.info.remote() for h in handles)), self.place_timeout_s)
        except TimeoutError:
            for h in handles:
                ray.kill(h, no_restart=True)
            raise WorkerUnavailable(
                f"pool {spec.name!r} could not be placed within {self.place_timeout_s:g} s: it asks for "
                f"num_cpus={opts.num_cpus}, num_gpus={opts.num_gpus}, resources={dict(opts.resources)}; "
                f"the cluster has {ray.cluster_resources()}"
            ) from None
        except ray.exceptions.RayError as e:
            raise WorkerUnavailable(f"pool {spec.name!r} failed to start: {_ray_message(e)}") from None
        for note in {i.get("note") for i in info} - {"", None}:
            _warn_once(f"note:{note}", str(note))
        pool = _RayPool(spec, opts, [_ActorSlot(h, asyncio.Semaphore(max(1, opts.max_concurrency))) for h in handles], info=info)
        async def run_batch(jobs: list[Job], p: _RayPool = pool) -> list[Attempt]:
            return await self._dispatch(p, jobs)

        pool.batcher = Batcher(
            run_batch,
            max_batch=opts.max_batch,
            max_wait_ms=opts.max_wait_ms,
            concurrency=max(1, opts.replicas) * max(1, opts.max_concurrency),
        )
        self._pools[spec.name] = pool

    def pools(self) -> list[str]:
        return [*self._pools, *self._local]

    def pool_info(self, name: str) -> list[dict[str, Any]]:
        """Where each actor of a pool runs (pid, node, device, GPU ids)."""
        return list(self._pools[name].info)

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

    async def _dispatch(self, pool: _RayPool, jobs: list[Job]) -> list[Attempt]:
        import ray

        resends = 0
        last = ""
        for attempt_no in range(self.max_resends + 1):
            slot = min(pool.actors, key=lambda a: a.inflight)
            slot.inflight += 1
            try:
                async with slot.sem:
                    ref = slot.handle.solve.remote(jobs)
                    try:
                        out: list[Attempt] = await asyncio.wait_for(ref, pool.options.timeout_s)
                    except TimeoutError:
                        ray.cancel(ref, force=False)
                        raise WorkerError(
                            f"pool {pool.spec.name!r} took longer than {pool.options.timeout_s:g} s on a batch of {len(jobs)}"
                        ) from None
            except (ray.exceptions.ActorDiedError, ray.exceptions.ActorUnavailableError, ray.exceptions.RayActorError,
                    ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as e:
                resends += 1
                self.stats.resends += len(jobs)
                last = _ray_message(e)
                log.info("pool %s: batch of %d re-sent after %s", pool.spec.name, len(jobs), type(e).__name__)
                await asyncio.sleep(self.backoff_s * (1 + attempt_no) * (0.5 + random.random()))
                continue
            except ray.exceptions.RayTaskError as e:
                cause = getattr(e, "cause", None)
                if isinstance(cause, TinyfleetError):
                    raise cause from None
                raise WorkerError(f"pool {pool.spec.name!r}: {_ray_message(e)}") from None
            finally:
                slot.inflight -= 1
            if resends:
                out = [a.model_copy(update={"info": {**a.info, "resends": resends}}) for a in out]
            self.stats.batches += 1
            return out
        raise WorkerUnavailable(
            f"pool {pool.spec.name!r}: no live actor answered a batch of {len(jobs)} after {self.max_resends} re-sends; last error: {last}"
        )

    async def close(self) -> None:
        import ray

        for p in self._local.values():
            await p.batcher.aclose()
            p.thread.shutdown(wait=False, cancel_futures=True)
        self._local.clear()
        for rp in self._pools.values():
            if rp.batcher is not None:
                await rp.batcher.aclose()
            if ray.is_initialized():
                for a in rp.actors:
                    try:
                        ray.kill(a.handle, no_restart=True)
                    except ray.exceptions.RayError:  # already gone
                        pass
        self._pools.clear()


def _ray_message(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    head = lines[0][:300] if lines else ""
    tail = lines[-1][:300] if len(lines) > 1 else ""
    return f"{type(e).__name__}: {head}" + (f" ... {tail}" if tail else "")
