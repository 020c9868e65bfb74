"""Verifiers as pool workers: a skill with ``verifier_pool`` set has its verifications sent
through the executor (Ray actors or local threads) in batches, like any other work, instead
of running in the driver."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from tinyfleet_core.models import Attempt, Verdict
from workers.base import Job, Skill, Verifier, Worker

__all__ = ["VerifyRequest", "VerifierWorker", "VerifierWorkerFactory"]


class VerifyRequest(BaseModel):
    """One (input, answer) pair to rule on, as plain payloads; ``holdout`` is the tier's
    answer to the skill's holdout input, for skills that have one (None: it gave none)."""

    model_config = ConfigDict(extra="forbid")
    input: dict[str, Any]
    output: dict[str, Any]
    holdout: dict[str, Any] | None = None


class VerifierWorker(Worker):
    """Runs a skill's verifier on batches of VerifyRequests; each Attempt's output is a Verdict."""

    def __init__(
        self, verifier: Verifier, input_model: type[BaseModel], output_model: type[BaseModel], with_holdout: bool = False
    ) -> None:
        self.verifier = verifier
        self.input_model = input_model
        self.output_model = output_model
        self.with_holdout = with_holdout
        self.name = f"verify:{verifier.name}"  # type: ignore[misc]

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        t0 = time.perf_counter()
        items = []
        for j in jobs:
            req = j.input
            assert isinstance(req, VerifyRequest)
            held = self.output_model.model_validate(req.holdout) if req.holdout is not None else None
            items.append((self.input_model.model_validate(req.input), self.output_model.model_validate(req.output), held))
        verdicts: list[Verdict] = (
            self.verifier.check_holdout_batch(items)
            if self.with_holdout
            else self.verifier.check_batch([(i, o) for i, o, _ in items])
        )
        dt = (time.perf_counter() - t0) / max(1, len(jobs))
        return [self.attempt(v.model_dump(), 1.0, job=j, seconds=dt) for j, v in zip(jobs, verdicts, strict=True)]


class VerifierWorkerFactory:
    """Builds a skill's VerifierWorker inside the process that hosts the pool."""

    def __init__(self, skill: Skill) -> None:
        if skill.verifier is None:
            raise ValueError(f"skill {skill.name!r} has no verifier to pool")
        self.verifier = skill.verifier
        self.input_model = skill.input_model
        self.output_model = skill.output_model
        self.with_holdout = skill.holdout is not None
        self.name = f"verify:{skill.verifier.name}"

    def __call__(self) -> Worker:
        return VerifierWorker(self.verifier, self.input_model, self.output_model, self.with_holdout)
