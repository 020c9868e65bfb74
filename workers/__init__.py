"""Workers, verifiers and skills: the base classes, the registry, the task kits and the
built-in skills with their ladders."""

from .base import Job, PoolOptions, Skill, Tier, Verifier, Worker
from .builtin import default_registry
from .custom import FunctionVerifier, FunctionWorker, define_skill, tier
from .registry import SkillRegistry, validate_payload

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
