"""The one exception tree of tinyfleet.

Every error a user can see derives from :class:`TinyfleetError`, and every message says
what was wrong and what to do about it. Nothing above the executor boundary sees Ray's or
openai's exceptions: they are converted into these.

    TinyfleetError
    ├── ConfigError          bad settings, a missing checkpoint, an unknown pool
    ├── InputError           a payload that does not fit its skill (bad grid, NaN, ...)
    ├── PlanError            a plan that fails validation (names the step and the problem)
    │   └── ModelOutputError   a model gave no valid plan after every re-ask (exit 1, not 2)
    ├── BudgetExceeded       a run budget ran out (names the budget)
    ├── WorkerError          a worker crashed, timed out or returned the wrong type
    │   └── WorkerUnavailable  no live worker could take the batch
    └── EscalationFailed     every tier of a ladder was tried and none produced a verified answer
"""

from __future__ import annotations

__all__ = [
    "TinyfleetError",
    "ConfigError",
    "InputError",
    "PlanError",
    "ModelOutputError",
    "BudgetExceeded",
    "WorkerError",
    "WorkerUnavailable",
    "EscalationFailed",
]


class TinyfleetError(Exception):
    """Base of every tinyfleet error."""


class ConfigError(TinyfleetError):
    """Settings, a checkpoint or a registry entry is wrong or missing."""


class InputError(TinyfleetError, ValueError):
    """A payload does not fit its skill: the message names the field and the problem."""


class PlanError(TinyfleetError):
    """A plan failed validation. ``step`` names the offending step when there is one."""

    def __init__(self, message: str, *, step: str | None = None) -> None:
        super().__init__(message)
        self.step = step


class ModelOutputError(PlanError):
    """A model's replies held no valid plan after every re-ask. It is a PlanError (the plan
    is what is wrong), but the model's failing, not the user's input: the command line exits
    1 for it, where a user's bad plan or task exits 2."""


class BudgetExceeded(TinyfleetError):
    """A run budget ran out; ``budget`` names which one (e.g. ``max_large_calls``)."""

    def __init__(self, budget: str, message: str) -> None:
        super().__init__(message)
        self.budget = budget


class WorkerError(TinyfleetError):
    """A worker failed on a batch: crashed, timed out, or returned the wrong type."""


class WorkerUnavailable(WorkerError):
    """No live worker could take the batch (all actors dead or unreachable)."""


class EscalationFailed(TinyfleetError):
    """Every tier of a step's ladder was tried and none gave a verified answer."""

    def __init__(self, message: str, *, step: str | None = None) -> None:
        super().__init__(message)
        self.step = step
