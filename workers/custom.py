"""Bring your own skill: plain functions (or Worker / Verifier subclasses) become tiers and
verifiers in a few lines.

    >>> from pydantic import BaseModel
    >>> from workers.custom import define_skill, tier
    >>> class Q(BaseModel):
    ...     a: int
    ...     b: int
    >>> class A(BaseModel):
    ...     total: int
    >>> skill = define_skill(
    ...     "math.add", "Add two integers.", Q, A,
    ...     ladder=[tier("guess", lambda q: A(total=q.a + q.b + (q.a > 5)), confidence=0.6),
    ...             tier("exact", lambda q: A(total=q.a + q.b), kind="exact")],
    ...     verifier=lambda q, ans: ans.total == q.a + q.b,
    ... )
    >>> skill.tier_names()
    ['guess', 'exact']

A worker function takes one input model and returns an output model (or a dict), or
``(output, confidence)``; with ``batched=True`` it takes and returns lists. It may be sync or
``async``. A verifier function returns a bool, ``(bool, reason)`` or a Verdict.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

from tinyfleet_core.errors import ConfigError, WorkerError
from tinyfleet_core.models import Attempt, Verdict
from workers.base import Job, PoolOptions, Skill, Tier, TierKind, Verifier, Worker

__all__ = ["FunctionWorker", "FunctionVerifier", "tier", "define_skill"]


def _run_maybe_async(value: Any) -> Any:
    if inspect.isawaitable(value):
        return asyncio.run(_await(value))
    return value


async def _await(value: Any) -> Any:
    return await value


class FunctionWorker(Worker):
    """A Worker around a plain (sync or async) function. Picklable with its function, so it
    runs in Ray actors as well as in-process."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str,
        skill: str = "",
        batched: bool = False,
        confidence: float = 1.0,
        stochastic: bool = False,
    ) -> None:
        self.fn = fn
        self.name = name  # type: ignore[misc]  # instance-level name for function workers
        self.skill = skill  # type: ignore[misc]
        self.batched = batched
        self.default_confidence = confidence
        self.stochastic = stochastic  # type: ignore[misc]

    def _one(self, job: Job, result: Any, seconds: float) -> Attempt:
        conf = self.default_confidence
        if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], int | float):
            result, conf = result
        if result is None:
            return self.attempt(None, 0.0, job=job, seconds=seconds, error="worker gave no answer")
        if not isinstance(result, BaseModel | dict):
            raise WorkerError(
                f"worker {self.name!r} returned {type(result).__name__}; return the skill's output model, a dict, "
                "or (output, confidence)"
            )
        return self.attempt(result, conf, job=job, seconds=seconds)

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        t0 = time.perf_counter()
        if self.batched:
            results = _run_maybe_async(self.fn([j.input for j in jobs]))
            if not isinstance(results, list) or len(results) != len(jobs):
                raise WorkerError(f"batched worker {self.name!r} must return a list of {len(jobs)} answers")
            dt = (time.perf_counter() - t0) / max(1, len(jobs))
            return [self._one(j, r, dt) for j, r in zip(jobs, results, strict=True)]
        out = []
        for j in jobs:
            t1 = time.perf_counter()
            r = _run_maybe_async(self.fn(j.input))
            out.append(self._one(j, r, time.perf_counter() - t1))
        return out


class _FunctionWorkerFactory:
    """Builds a FunctionWorker in the process that hosts the pool (carries ``stochastic``
    and ``name`` so the run loop can read them without building the worker)."""

    def __init__(self, fn: Callable[..., Any], **kw: Any) -> None:
        self.fn = fn
        self.kw = kw
        self.name = kw["name"]
        self.stochastic = kw.get("stochastic", False)

    def __call__(self) -> Worker:
        return FunctionWorker(self.fn, **self.kw)


class FunctionVerifier(Verifier):
    """A Verifier around ``fn(input, output) -> bool | (bool, reason) | Verdict``."""

    def __init__(self, fn: Callable[[Any, Any], Any], name: str = "custom", blocking: bool = False) -> None:
        self.fn = fn
        self.name = name  # type: ignore[misc]
        self.blocking = blocking  # type: ignore[misc]

    def check_batch(self, pairs: Sequence[tuple[BaseModel, BaseModel]]) -> list[Verdict]:
        out = []
        for inp, ans in pairs:
            r = _run_maybe_async(self.fn(inp, ans))
            if isinstance(r, Verdict):
                out.append(r if r.verifier else r.model_copy(update={"verifier": self.name}))
            elif isinstance(r, tuple) and len(r) == 2:
                out.append(self.verdict(bool(r[0]), str(r[1])))
            elif isinstance(r, bool):
                out.append(self.verdict(r, "check passed" if r else "check failed"))
            else:
                raise ConfigError(
                    f"verifier {self.name!r} returned {type(r).__name__}; return a bool, (bool, reason) or a Verdict"
                )
        return out


def tier(
    name: str,
    worker: Callable[..., Any] | type[Worker],
    *,
    kind: TierKind = "tiny",
    batched: bool = False,
    confidence: float = 1.0,
    stochastic: bool = False,
    accepts: Callable[[BaseModel], bool] | None = None,
    **pool: Any,
) -> Tier:
    """A ladder tier from a Worker subclass or a plain function. ``pool`` takes PoolOptions
    fields (``replicas``, ``num_cpus``, ``num_gpus``, ``max_batch``, ``timeout_s``, ``inline`` ...)."""
    try:
        opts = PoolOptions(**pool)
    except TypeError as e:
        raise ConfigError(f"tier {name!r}: {e}; see workers.PoolOptions for the fields") from None
    if isinstance(worker, type) and issubclass(worker, Worker):
        return Tier(name, worker, kind, opts, accepts)
    if not callable(worker):
        raise ConfigError(f"tier {name!r}: worker must be a Worker subclass or a function, got {type(worker).__name__}")
    factory = _FunctionWorkerFactory(worker, name=name, batched=batched, confidence=confidence, stochastic=stochastic)
    return Tier(name, factory, kind, opts, accepts)


def define_skill(
    name: str,
    description: str,
    input_model: type[BaseModel],
    output_model: type[BaseModel],
    *,
    ladder: list[Tier],
    verifier: Verifier | Callable[[Any, Any], Any] | None = None,
    fallback: Tier | None = None,
    precheck: Callable[[BaseModel], None] | None = None,
) -> Skill:
    """A Skill from models, tiers and an optional verifier (function or Verifier)."""
    if verifier is not None and not isinstance(verifier, Verifier):
        if not callable(verifier):
            raise ConfigError(f"skill {name!r}: verifier must be a Verifier or a function")
        verifier = FunctionVerifier(verifier, name=f"{name}.check")
    for t in [*ladder, *([fallback] if fallback else [])]:
        factory = t.worker
        if isinstance(factory, _FunctionWorkerFactory):
            factory.kw["skill"] = name
            factory.name = factory.kw["name"] = f"{name}.{t.name}"  # pool and worker name: unique per skill
    return Skill(
        name=name,
        description=description,
        input_model=input_model,
        output_model=output_model,
        ladder=list(ladder),
        fallback=fallback,
        verifier=verifier,
        precheck=precheck,
    )
