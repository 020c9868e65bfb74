"""Workers, verifiers and skills: the base classes, the registry, the task kits and the
built-in skills with their ladders.

``default_registry`` (and with it torch, for the neural tiers) is imported on first use, so
a process that hosts only a pure-Python worker (a Ray actor of the greedy maze pool, say)
never pays for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .base import Job, PoolOptions, Skill, Tier, Verifier, Worker
from .custom import FunctionVerifier, FunctionWorker, define_skill, tier
from .registry import SkillRegistry, validate_payload

if TYPE_CHECKING:
    from .builtin import default_registry


def __getattr__(name: str) -> Any:
    if name == "default_registry":
        value = importlib.import_module(".builtin", __name__).default_registry
        globals()[name] = value
        return value
    raise AttributeError(f"module 'workers' has no attribute {name!r}")


__all__ = [
    "Job",
    "Worker",
    "Verifier",
    "Skill",
    "Tier",
    "PoolOptions",
    "SkillRegistry",
    "default_registry",
    "validate_payload",
    "define_skill",
    "tier",
    "FunctionWorker",
    "FunctionVerifier",
]
