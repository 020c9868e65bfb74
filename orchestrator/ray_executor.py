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
reservation cannot add cores, it can only leave pools pending when several start at once. On
an attached cluster with CPUs, a pool's request is sized from ``ray.cluster_resources()``
(:func:`fit_cpus`: at most 1/16 of the cluster's CPUs per actor, less when few are free), so a
whole ladder's pools fit a 2-CPU head; a cluster with no free CPU at all is an error at once.
A cluster that reports no CPU (an autoscaler's CPU-less head) keeps the request as asked: the
autoscaler adds nodes, and ``place_timeout_s`` bounds the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import random
import re
import signal
import socket
import stat
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from orchestrator.batching import Batcher
from orchestrator.executor import Executor, PoolSpec, _LocalPool, run_worker_batch
from tinyfleet_core.errors import ConfigError, TinyfleetError, WorkerError, WorkerUnavailable
from tinyfleet_core.models import Attempt
from workers.base import Job, PoolOptions, Worker

__all__ = ["RayExecutor", "PoolActor", "RayTarget", "ensure_ray", "resolve_address"]

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

    ``address`` (else ``RAY_ADDRESS``, as inside ``ray job submit``):

    - ``None``: attach to the Ray that ``ray start --head`` runs on this machine if there is
      one (its address file in Ray's temp dir, and its GCS answers), else start a private
      local Ray sized to this machine, without the dashboard;
    - ``"local"``: always start a private local Ray;
    - ``"auto"``: attach to the local ``ray start`` cluster; ConfigError when there is none;
    - ``host:port`` (the GCS address ``ray start --head`` prints) or ``ray://host:port``:
      its port is probed first (:data:`CONNECT_TIMEOUT_S`), so an unreachable address is one
      ConfigError within seconds, never Ray's minutes of reconnect warnings.

    Attaching passes no resource arguments. Token authentication: a local start sets
    ``RAY_AUTH_MODE=token`` explicitly unless it is set (Ray's default, without its warning on
    every run); attaching to the cluster found on this machine turns token mode on when a token
    is available (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``) and
    ``RAY_AUTH_MODE`` is unset, as Ray does; an explicit address keeps ``RAY_AUTH_MODE`` as the
    user set it, and a refused token is one ConfigError saying what to export."""
    import ray

    if ray.is_initialized():
        return False
    return _init_ray(resolve_address(address), num_cpus)


def _init_ray(target: RayTarget | None, num_cpus: int | None = None) -> bool:
    import ray

    global _started_locally, connection
    with _init_lock:
        if ray.is_initialized():
            return False
        if target is not None:
            _attach(target)
            return False
        cpus = num_cpus or os.cpu_count() or 1
        _auth_mode_default("token")
        with _keep_sigterm_handler():
            ray.init(
                address="local",
                num_cpus=cpus,
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=False,
                configure_logging=False,
            )
        _started_locally = True
        connection = f"started a local Ray on this machine ({cpus} CPUs)"
        return True


CONNECT_TIMEOUT_S = 3.0
"""How long an attach waits for the cluster's port to answer before giving up."""

connection = ""
"""What :func:`ensure_ray` did last, in words (shown by the CLI): attached where, or started."""


@dataclass(frozen=True)
class RayTarget:
    """A cluster to attach to: the address for ``ray.init`` and how it was found."""

    address: str
    host: str
    port: int
    how: str
    discovered: bool = False
    """Found on this machine ('ray start' address file), not given as an address."""


def _split_host_port(addr: str) -> tuple[str, int] | None:
    rest = addr.removeprefix("ray://").rstrip("/")
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:/\s]+):(\d{1,5})", rest)
    if m is None:
        return None
    host, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    return host, int(port)


def _local_cluster_address() -> str | None:
    """The GCS address of the cluster ``ray start --head`` runs on this machine (Ray's own
    address file in its temp dir, ``RAY_TMPDIR`` honoured), or None.

    Only a cluster this user started counts: the address file must be a regular file owned by
    this uid and not writable by others. On a shared host another user's ``ray start`` would
    otherwise receive every default run's task inputs and hand back what the driver unpickles."""
    try:
        from ray._private.utils import get_ray_address_file

        path = get_ray_address_file(None)
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return None
        with open(path) as f:
            found = f.read().strip()
    except (ImportError, AttributeError, OSError):
        return None
    return found or None


def _reachable(host: str, port: int, timeout: float = CONNECT_TIMEOUT_S) -> str | None:
    """None when ``host:port`` accepts a TCP connection within ``timeout``; else why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except ConnectionRefusedError:
        return "connection refused (nothing listens there)"
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except socket.gaierror:
        return "the host name does not resolve"
    except OSError as e:
        return e.strerror or type(e).__name__


_WHAT_TO_DO = (
    "start one with 'ray start --head' and pass the address it prints (host:6379), "
    "or use --address local for a private Ray on this machine"
)


def resolve_address(address: str | None) -> RayTarget | None:
    """Where :func:`ensure_ray` attaches (None: start a local Ray). Checks the address and
    that its port answers; ConfigError (one line, naming the address and what to do) when
    it is malformed, a dashboard URL, or unreachable."""
    given = address or os.environ.get("RAY_ADDRESS") or None
    source = "--address" if address else "RAY_ADDRESS"
    if given == "local":
        return None
    if given is None or given == "auto":
        found = _local_cluster_address()
        parsed = _split_host_port(found) if found else None
        if parsed is None or _reachable(*parsed, timeout=1.0) is not None:
            if given == "auto":
                raise ConfigError(f"{source} auto: no Ray cluster runs on this machine; {_WHAT_TO_DO}")
            return None  # none (or a stale address file): start a local Ray
        assert found is not None
        return RayTarget(found, *parsed, how="the Ray cluster that 'ray start' runs on this machine", discovered=True)
    if given.startswith(("http://", "https://")):
        raise ConfigError(
            f"{source} {given} is a dashboard (job submission) address; tinyfleet attaches to the GCS "
            "address 'ray start --head' prints (host:6379) or to ray://host:10001; "
            "'ray job submit --address' is where the dashboard URL goes"
        )
    parsed = _split_host_port(given)
    if parsed is None:
        raise ConfigError(f"{source} {given!r} is not a Ray address: give host:port (e.g. 127.0.0.1:6379), ray://host:port, auto or local")
    why = _reachable(*parsed)
    if why is not None:
        raise ConfigError(f"cannot reach a Ray cluster at {given}: {why}; {_WHAT_TO_DO}")
    return RayTarget(given, *parsed, how="the Ray cluster", discovered=False)


def _auth_mode_default(mode: str) -> None:
    """Set ``RAY_AUTH_MODE`` for this process (and what it starts) unless the user set it,
    and refresh Ray's cached config so this process sees it."""
    if os.environ.get("RAY_AUTH_MODE"):
        return
    os.environ["RAY_AUTH_MODE"] = mode
    try:
        importlib.import_module("ray._raylet").Config.initialize("")
    except (ImportError, AttributeError):  # a Ray without token auth: nothing to refresh
        pass


@contextlib.contextmanager
def _keep_sigterm_handler() -> Iterator[None]:
    """``ray.init`` installs a SIGTERM handler of its own that exits; a handler the program
    installed itself (the CLI's: stop the run, keep the journal) must hold for the whole call,
    since a SIGTERM can arrive while Ray starts. So while ``ray.init`` runs, its attempt to
    replace that handler is skipped (other signals pass through), and the handler is put back
    afterwards in any case. Without a handler of the program's own, Ray's is left alone."""
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM) if main else None
    if not (main and callable(before)):
        yield
        return
    original = signal.signal

    def keep_ours(signum: int, handler: Any) -> Any:
        if signum == signal.SIGTERM:
            return before
        return original(signum, handler)

    signal.signal = keep_ours  # type: ignore[assignment]
    try:
        yield
    finally:
        signal.signal = original
        original(signal.SIGTERM, before)


def _token_available() -> bool:
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return True
    try:
        loader = importlib.import_module("ray._raylet").AuthenticationTokenLoader
        return bool(loader.instance().has_token(ignore_auth_mode=True))
    except (ImportError, AttributeError):
        return (Path.home() / ".ray" / "auth_token").is_file()


def _attach(target: RayTarget) -> None:
    import ray

    global connection
    if target.discovered and _token_available():
        # as Ray does for a cluster it finds itself: a 'ray start' head on this machine with a
        # token around runs token auth. An explicit address keeps the user's RAY_AUTH_MODE.
        _auth_mode_default("token")
    try:
        with _keep_sigterm_handler():
            ray.init(address=target.address, logging_level=logging.WARNING, log_to_driver=False)
    except ray.exceptions.AuthenticationError:
        raise ConfigError(
            f"the Ray cluster at {target.address} refused this driver's token: export RAY_AUTH_MODE=token "
            "and the cluster's token as RAY_AUTH_TOKEN (or in ~/.ray/auth_token; 'ray get-auth-token' on the head prints it)"
        ) from None
    except (ConnectionError, TimeoutError, ray.exceptions.RaySystemError) as e:
        raise ConfigError(f"cannot attach to the Ray cluster at {target.address}: {_ray_message(e)}; {_WHAT_TO_DO}") from None
    cpus = ray.cluster_resources().get("CPU", 0)
    connection = f"attached to {target.how} at {target.host}:{target.port} ({cpus:g} CPUs; --address local starts a private Ray instead)"


POOL_SLOTS = 16
"""On a cluster with CPUs, one pool actor reserves at most ``1 / POOL_SLOTS`` of them, so the
pools of every ladder rung (and their verifiers) fit on a small head at once."""
MIN_CPUS = 0.01
"""The smallest CPU share a pool actor is given; under it the cluster counts as full."""


def fit_cpus(asked: float, replicas: int, total: float, available: float) -> float:
    """The CPUs one actor of a pool reserves on a cluster with ``total`` CPUs of which
    ``available`` are free: what the pool asked, at most ``total / POOL_SLOTS``, and, when the
    free CPUs cannot hold every replica at that, half the free share per replica (so later
    pools still fit). WorkerUnavailable at once (never a placement wait that cannot end)
    when not even :data:`MIN_CPUS` per replica is free."""
    share = min(asked, total / POOL_SLOTS)
    if share * replicas > available:
        share = available / (2 * replicas)
    share = float(int(share * 1000) / 1000)  # Ray's resource precision; never above what is free
    if share < MIN_CPUS:
        raise WorkerUnavailable(
            f"the Ray cluster's CPUs are all reserved ({available:g} of {total:g} free): a pool needs "
            f"{MIN_CPUS:g} CPU per replica for {replicas} replica(s); stop other jobs' actors, add CPUs "
            "(ray start --num-cpus=N) or run with --address local"
        )
    return share


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
        self._notify("connected", connection, seconds=time.monotonic() - t0)

    async def ensure_pool(self, spec: PoolSpec) -> None:
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
        if _started_locally and opts.num_cpus > 0:
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
            return await self._dispatch(p, jobs)

        pool.batcher = Batcher(
            run_batch,
            max_batch=opts.max_batch,
            max_wait_ms=opts.max_wait_ms,
            concurrency=max(1, opts.replicas) * max(1, opts.max_concurrency),
            spread=max(1, opts.replicas),
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
                try:
                    out: list[Attempt] = await asyncio.wait_for(ref, pool.options.timeout_s)
                except TimeoutError:
                    ray.cancel(ref, force=False)
                    raise WorkerError(
                        f"pool {pool.spec.name!r} took longer than {pool.options.timeout_s:g} s on a batch of {len(jobs)}"
                    ) from None
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


class _ActorGone(Exception):
    """The actor that had a batch died or is unavailable: the batch is re-sent."""


def _ray_message(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    head = lines[0][:300] if lines else ""
    tail = lines[-1][:300] if len(lines) > 1 else ""
    return f"{type(e).__name__}: {head}" + (f" ... {tail}" if tail else "")
