"""Ruling on a tier's attempts: the schema first, then the skill's verifier, wherever it runs.

A verifier runs inline on the driver's thread (its CPU time is moved out of driver seconds
through :class:`~orchestrator.ledger.DriverClock`), in a thread when it blocks (subprocesses),
or as a pool on the executor when the skill has a ``verifier_pool``. Every verification is
timed; a verifier that raises rejects every answer, visibly, rather than passing them.
"""

from __future__ import annotations

import asyncio
import time

from pydantic import BaseModel, ValidationError

from orchestrator.executor import Executor, PoolSpec
from orchestrator.ledger import DriverClock
from tinyfleet_core.errors import InputError
from tinyfleet_core.models import Attempt, Trial, Verdict
from tinyfleet_core.validation import first_problem
from workers.base import Job, Skill, Verifier

__all__ = ["verify_attempts"]


async def verify_attempts(
    skill: Skill,
    inp: BaseModel,
    attempts: list[Attempt],
    verifier: Verifier | None,
    held: list[Attempt | None] | None,
    *,
    executor: Executor,
    clock: DriverClock,
) -> tuple[list[Trial], float]:
    """Rule on every attempt (``held``: the tier's answers to the holdout jobs, one per
    attempt); returns the trials and the seconds verification took."""
    verdicts: list[Verdict | None] = [None] * len(attempts)
    pairs: list[tuple[int, BaseModel]] = []
    for i, a in enumerate(attempts):
        if a.output is None:
            verdicts[i] = Verdict(ok=False, reason=a.error or "worker gave no answer", verifier="none")
            continue
        try:
            out = skill.output_model.model_validate(a.output)
        except (ValidationError, InputError) as e:
            verdicts[i] = Verdict(ok=False, reason=f"output does not fit {skill.output_model.__name__}: {_first_error(e)}", verifier="schema")
            continue
        pairs.append((i, out))
    seconds = 0.0
    if verifier is not None and pairs:
        batch = [(inp, out) for _, out in pairs]
        extra = None if held is None else [_holdout_output(skill, held[i] if i < len(held) else None) for i, _ in pairs]
        try:
            if skill.verifier_pool is not None:
                got, seconds = await _verify_on_pool(executor, skill, batch, extra)
            elif verifier.blocking:
                got, seconds = await asyncio.to_thread(_timed_check, verifier, batch, extra)
            else:
                t0 = time.thread_time()  # on the driver's thread: its CPU time, moved out of driver seconds
                try:
                    got = _check(verifier, batch, extra)
                finally:
                    seconds = time.thread_time() - t0
                    clock.inline_verify_s += seconds
            if len(got) != len(batch):
                raise ValueError(f"returned {len(got)} verdicts for {len(batch)} answers")
        except Exception as e:  # noqa: BLE001 - a broken verifier rejects, visibly, rather than passing
            got = [Verdict(ok=False, reason=f"verifier {verifier.name!r} failed: {type(e).__name__}: {e}", verifier=verifier.name)] * len(batch)
        for (i, _), v in zip(pairs, got, strict=True):
            verdicts[i] = v
    trials = [
        Trial(attempt=a, verdict=v if (verifier is not None or (v is not None and not v.ok)) else None)
        for a, v in zip(attempts, verdicts, strict=True)
    ]
    return trials, seconds


async def _verify_on_pool(
    executor: Executor, skill: Skill, batch: list[tuple[BaseModel, BaseModel]], extra: list[BaseModel | None] | None
) -> tuple[list[Verdict], float]:
    from workers.serving.verifier_pool import VerifierWorkerFactory, VerifyRequest

    assert skill.verifier is not None and skill.verifier_pool is not None
    factory = VerifierWorkerFactory(skill)
    await executor.ensure_pool(PoolSpec(factory.name, factory, skill.verifier_pool))
    held = extra if extra is not None else [None] * len(batch)
    jobs = [
        Job(VerifyRequest(input=i.model_dump(), output=o.model_dump(), holdout=h.model_dump() if h is not None else None))
        for (i, o), h in zip(batch, held, strict=True)
    ]
    attempts = await asyncio.gather(*(executor.submit(factory.name, j) for j in jobs))
    return [Verdict.model_validate(a.output) for a in attempts], sum(a.cost.worker_s for a in attempts)


def _holdout_output(skill: Skill, a: Attempt | None) -> BaseModel | None:
    """The tier's answer to the holdout job, validated; None when it gave none that fits."""
    if a is None or a.output is None:
        return None
    try:
        return skill.output_model.model_validate(a.output)
    except (ValidationError, InputError):
        return None


def _check(verifier: Verifier, batch: list[tuple[BaseModel, BaseModel]], extra: list[BaseModel | None] | None) -> list[Verdict]:
    if extra is None:
        return verifier.check_batch(batch)
    return verifier.check_holdout_batch([(i, o, h) for (i, o), h in zip(batch, extra, strict=True)])


def _timed_check(
    verifier: Verifier, batch: list[tuple[BaseModel, BaseModel]], extra: list[BaseModel | None] | None
) -> tuple[list[Verdict], float]:
    """A blocking verifier's verdicts and its wall time in this thread (which covers the
    subprocesses it waits on)."""
    t0 = time.perf_counter()
    got = _check(verifier, batch, extra)
    return got, time.perf_counter() - t0


def _first_error(e: Exception) -> str:
    if isinstance(e, ValidationError):
        loc, msg = first_problem(e)
        return f"{loc}: {msg}"
    return str(e)
