"""Workers, verifiers and skills: the base classes, the registry, the task kits and the
built-in skills with their ladders.

The built-in skills (``workers.builtin.default_registry``, which imports torch for the neural
tiers) are not imported here, so a process that hosts only a pure-Python worker (a Ray actor
of the greedy maze pool, say) never pays for torch.
"""

from __future__ import annotations

from workers.base import Job, PoolOptions, Skill, Tier, Verifier, Worker
from workers.custom import FunctionVerifier, FunctionWorker, define_skill, tier
from workers.registry import SkillRegistry, validate_payload

__all__ = [
    "Job",
    "Worker",
    "Verifier",
    "Skill",
    "Tier",
    "PoolOptions",
    "SkillRegistry",
    "validate_payload",
    "define_skill",
    "tier",
    "FunctionWorker",
    "FunctionVerifier",
]
