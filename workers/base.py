"""Worker, Verifier and Skill: the pieces a skill is made of.

A *worker* answers jobs of one skill in batches (``solve_batch``); a *verifier* rules on
answers (``check_batch``); a *skill* ties an input and output model to a verifier and an
escalation ladder of tiers, each tier naming the worker that serves it.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel

from tinyfleet_core.models import Attempt, Cost, SelectRule, Verdict

__all__ = ["Job", "Worker", "Verifier", "Tier", "TierKind", "Skill", "PoolOptions"]

TierKind = Literal["tiny", "heuristic", "llm", "tool", "exact", "large"]


def _rebuild_job(cls: type[BaseModel], fields: dict[str, Any], particle: int, max_depth: int | None, key: str) -> Job:
    return Job(cls.model_construct(**fields), particle, max_depth, key)


@dataclass(frozen=True)
class Job:
    """One unit of work for a worker: a validated input and which particle this is.

    ``particle`` > 0 asks a stochastic worker for a different sample (another augmentation,
    another seed); ``max_depth`` caps recursion / supervision steps where a worker has them.
    """

    input: BaseModel
    particle: int = 0
    max_depth: int | None = None
    key: str = ""

    def __reduce__(self) -> tuple[Any, ...]:
        # The input was validated in the driver; rebuild it without validating again.
        return (_rebuild_job, (type(self.input), dict(self.input.__dict__), self.particle, self.max_depth, self.key))


class Worker(ABC):
    """Base class of every worker. Subclasses set ``name`` and ``skill`` and implement
    :meth:`solve_batch`. ``setup`` runs once in the process that hosts the worker (a Ray
    actor or the driver) before the first batch; load models there."""

    name: ClassVar[str] = ""
    skill: ClassVar[str] = ""
    stochastic: ClassVar[bool] = False
    """True when particles > 1 give different answers (augmentations, sampling)."""

    device: str = "cpu"

    def setup(self, device: str = "cpu") -> None:
        self.device = device

    @abstractmethod
    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        """Answer every job, in order; one Attempt per job (``output=None`` to give up)."""

    def attempt(
        self,
        output: BaseModel | dict[str, Any] | None,
        confidence: float,
        *,
        job: Job,
        seconds: float = 0.0,
        error: str | None = None,
        recursion_steps: int = 0,
        **info: Any,
    ) -> Attempt:
        """Build an Attempt signed by this worker."""
        out = output.model_dump() if isinstance(output, BaseModel) else output
        return Attempt(
            output=out,
            confidence=max(0.0, min(1.0, float(confidence))),
            worker=self.name,
            particle=job.particle,
            cost=Cost(worker_s=seconds, particles=1, recursion_steps=recursion_steps),
            error=error,
            info=info,
        )


class Verifier(ABC):
    """Rules on answers. ``blocking`` verifiers (subprocesses, network) run in a thread."""

    name: ClassVar[str] = ""
    blocking: ClassVar[bool] = False
    score_lower_is_better: ClassVar[bool] = False
    """How ``Verdict.score`` ranks answers under ``select="best_score"``: higher is better (a
    judge's confidence) unless this says lower is (an error, such as a backtest's MASE)."""

    @abstractmethod
    def check_batch(self, pairs: Sequence[tuple[BaseModel, BaseModel]]) -> list[Verdict]:
        """One Verdict per (input, output) pair, in order."""

    def check_holdout_batch(self, items: Sequence[tuple[BaseModel, BaseModel, BaseModel | None]]) -> list[Verdict]:
        """One Verdict per (input, output, holdout answer), for skills with a ``holdout``:
        the third item is the same tier's answer to ``skill.holdout(input)`` (None when it
        gave none). The default ignores it; a verifier that scores the holdout overrides this."""
        return self.check_batch([(i, o) for i, o, _ in items])

    def verdict(self, ok: bool, reason: str = "", score: float | None = None, **details: Any) -> Verdict:
        return Verdict(ok=ok, reason=reason, score=score, verifier=self.name, details=details)


@dataclass(frozen=True)
class PoolOptions:
    """How a worker's pool is deployed: replicas, resources, batching, placement."""

    replicas: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_batch: int = 64
    max_wait_ms: float = 2.0
    max_concurrency: int = 4
    """Batches one replica runs at once; on Ray also the bound on calls in flight per replica
    (``replicas x max_concurrency`` per pool; every other job waits in the driver's queue, so a
    batch of 100,000 items never becomes 100,000 Ray calls: ``RayExecutor.pool_load``)."""
    inline: bool = False
    """Run in the driver process even under Ray (cheap tools, pure-Python heuristics)."""
    resources: dict[str, float] = field(default_factory=dict)
    """Custom Ray resources, e.g. ``{"gpu_node": 0.01}`` to pin a pool to a node type."""
    timeout_s: float = 120.0
    auto_inline: bool = True
    """On Ray, let the executor move the pool into the driver when its measured work per item
    is under a millisecond and smaller than dispatching it (``orchestrator/cheap_tiers.py``);
    False keeps it on its actors (a worker that must run isolated)."""


@dataclass(frozen=True)
class Tier:
    """One rung of a ladder: a name shown in reports, a worker factory and its pool."""

    name: str
    worker: Callable[[], Worker]
    kind: TierKind = "tiny"
    pool: PoolOptions = field(default_factory=PoolOptions)
    accepts: Callable[[BaseModel], bool] | None = None
    """Which inputs this tier can take (e.g. only the grid sizes a checkpoint was trained
    on). A step whose input it does not accept skips the tier: no attempt, no escalation."""

    @property
    def pool_name(self) -> str:
        """The pool that serves this tier: one per worker kind, shared by every skill whose
        ladder uses the same worker (its ``name``); a factory without a name gets the tier's."""
        f: Any = self.worker
        while isinstance(f, functools.partial):
            f = f.func
        name = getattr(f, "name", "")
        return name if isinstance(name, str) and name else self.name

    @property
    def stochastic(self) -> bool:
        """Whether particles > 1 make sense: read from the worker class behind the factory
        (a class, a ``functools.partial`` of one, or any callable with a ``stochastic`` attribute)."""
        f: Any = self.worker
        while isinstance(f, functools.partial):
            f = f.func
        return bool(getattr(f, "stochastic", False))


@dataclass
class Skill:
    """A named capability: typed input/output, a verifier and an escalation ladder.

    ``fallback`` is the offline last tier (an exact solver or a classical method); with a
    large model configured the ladder ends at the large model instead.
    ``precheck`` rejects inputs that are well-formed but invalid before anything runs,
    raising :class:`orchestrator.InputError`. It runs in the driver once per step during
    plan validation, so it must be cheap and local (shapes, ranges, duplicates): never a
    search or a solve. Whether a consistent input has an answer is the ladder's to find.
    """

    name: str
    description: str
    input_model: type[BaseModel]
    output_model: type[BaseModel]
    ladder: list[Tier] = field(default_factory=list)
    fallback: Tier | None = None
    verifier: Verifier | None = None
    precheck: Callable[[BaseModel], None] | None = None
    recognize: Callable[[dict[str, Any]], bool] | None = None
    verifier_pool: PoolOptions | None = None
    """When set, verifications run as a pool on the executor (e.g. sandboxes on Ray actors)
    rather than in the driver."""
    holdout: Callable[[BaseModel], BaseModel | None] | None = None
    """When set, every tier also answers ``holdout(input)``, in the same batch: the input
    with the truth the verifier keeps back removed (a forecast's last window). The verifier
    gets that answer in ``check_holdout_batch`` and scores it against the truth itself."""
    select: SelectRule | None = None
    """The select rule of this skill's steps whose strategy does not set one (e.g.
    ``"best_score"`` for a skill whose verifier scores answers by degree)."""

    def tier(self, name: str) -> Tier:
        for t in [*self.ladder, *([self.fallback] if self.fallback else [])]:
            if t.name == name:
                return t
        raise KeyError(name)

    def tier_names(self) -> list[str]:
        return [t.name for t in self.ladder] + ([self.fallback.name] if self.fallback else [])

