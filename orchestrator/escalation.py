"""Escalation policy: which tiers a step climbs, and which attempt a tier settles on.

A step climbs one tier when its verifier rejects every particle, when it has no verifier
and its best confidence is under the step's threshold, or when the tier's worker errors past
its retries. The last tier is the large model when the planner has one, else the skill's
offline fallback (an exact solver or classical method, named as such in reports).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Literal

from tinyfleet_core.errors import ConfigError, EscalationFailed
from tinyfleet_core.models import SelectRule, Step, Trial
from workers.base import Skill, Tier, Worker

__all__ = ["Policy", "LARGE", "best_scored", "companion_tier", "ladder_for", "select", "select_rule"]


def _no_worker() -> Worker:
    raise EscalationFailed("the large-model tier has no worker: it is answered by the planner's solve()")


LARGE = Tier(name="large", worker=_no_worker, kind="large")
"""The large model's tier: answered by ``planner.solve``."""


@dataclass(frozen=True)
class Policy:
    """How steps climb their ladders.

    ``mode``: ``ladder`` (every tier in order), ``tiny_only`` (no final tier: no large model,
    no fallback), ``final_only`` (straight to the final tier: "large only").
    ``final``: ``auto`` (large model if the planner has one, else the fallback), ``large``,
    ``fallback``, or ``none``.
    ``ladders``: per-skill override of the tier names to climb (final tier excluded).
    ``replans``: how many times a run with failed steps asks a planner that has a large model
    for a new plan (settled steps are kept; only new or changed steps run)."""

    mode: Literal["ladder", "tiny_only", "final_only"] = "ladder"
    final: Literal["auto", "large", "fallback", "none"] = "auto"
    ladders: dict[str, list[str]] = field(default_factory=dict)
    replans: int = 1


def _final_tier(skill: Skill, policy: Policy, has_large: bool) -> Tier | None:
    if policy.final == "none":
        return None
    if policy.final == "large" or (policy.final == "auto" and has_large):
        return LARGE
    if skill.fallback is None:
        if policy.final == "fallback":
            raise ConfigError(f"skill {skill.name!r} has no fallback tier; use final='large' or 'auto'")
        return LARGE if has_large else None
    return skill.fallback


def ladder_for(step: Step, skill: Skill, policy: Policy, has_large: bool) -> list[Tier]:
    """The tiers ``step`` will climb, in order."""
    if skill.name in policy.ladders:
        names = policy.ladders[skill.name]
        try:
            tiers = [skill.tier(n) for n in names]
        except KeyError as e:
            raise ConfigError(f"policy ladder for {skill.name!r} names unknown tier {e.args[0]!r}; tiers: {skill.tier_names()}") from None
    else:
        tiers = list(skill.ladder)
    final = _final_tier(skill, policy, has_large)
    if policy.mode == "final_only":
        chosen = [final] if final else tiers[-1:]
    elif policy.mode == "tiny_only":
        chosen = tiers or ([final] if final else [])
    else:
        chosen = tiers + ([final] if final and final not in tiers else [])
    start = step.strategy.start_tier
    if start is not None:
        names = [t.name for t in chosen]
        if start in names:
            chosen = chosen[names.index(start) :]
    if not chosen:
        raise ConfigError(f"step {step.id!r}: policy leaves skill {skill.name!r} with no tier to run")
    return chosen


def select_rule(step: Step, skill: Skill) -> SelectRule:
    """The step's select rule: its strategy's when the strategy sets one, else the skill's
    default (``Skill.select``), else ``first_verified``."""
    if "select" in step.strategy.model_fields_set or skill.select is None:
        return step.strategy.select
    return skill.select


def companion_tier(tiers: list[Tier], skill: Skill) -> Tier | None:
    """Under ``best_score``, the tier that runs alongside the step's first tier: the skill's
    fallback (its classical or exact method) when it is on this step's ladder, is not the
    first tier and is not the large model. None otherwise."""
    fb = skill.fallback
    if fb is None or fb.kind == "large" or len(tiers) < 2 or tiers[0] is fb or fb not in tiers:
        return None
    return fb


def best_scored(trials: list[Trial], *, lower_is_better: bool) -> Trial | None:
    """The verified trial with the best verifier score (ties and unscored trials: the
    earliest in ``trials``, i.e. the cheaper tier, then the lower particle); None when none
    is verified."""
    cands = [(i, t) for i, t in enumerate(trials) if t.attempt.output is not None and t.verdict is not None and t.verdict.ok]
    if not cands:
        return None
    sign = 1.0 if lower_is_better else -1.0

    def key(it: tuple[int, Trial]) -> tuple[float, int]:
        score = it[1].verdict.score if it[1].verdict is not None else None
        ranked = sign * score if score is not None and score == score else float("inf")  # NaN / None rank last
        return ranked, it[0]

    return min(cands, key=key)[1]


def select(trials: list[Trial], rule: SelectRule, *, verified: bool, lower_is_better: bool = False) -> Trial | None:
    """Pick the attempt that settles the tier, or None.

    With a verifier only verified trials are candidates. ``first_verified`` keeps the lowest
    particle; ``max_confidence`` the most confident; ``vote`` groups identical answers and
    picks the group with the largest total confidence (ties: the earliest particle);
    ``best_score`` the best verifier score (``lower_is_better`` says which way), and without
    a verifier the lowest particle."""
    if rule == "best_score" and verified:
        return best_scored(trials, lower_is_better=lower_is_better)
    cands = [
        t
        for t in trials
        if t.attempt.output is not None
        and (t.verdict.ok if t.verdict is not None else not verified)
    ]
    if not cands:
        return None
    if rule in ("first_verified", "best_score"):
        return min(cands, key=lambda t: t.attempt.particle)
    if rule == "max_confidence":
        return max(cands, key=lambda t: (t.attempt.confidence, -t.attempt.particle))
    groups: dict[str, list[Trial]] = defaultdict(list)
    for t in cands:
        groups[json.dumps(t.attempt.output, sort_keys=True)].append(t)
    best = max(
        groups.values(),
        key=lambda g: (sum(t.attempt.confidence for t in g) + 1e-9 * len(g), -min(t.attempt.particle for t in g)),
    )
    return max(best, key=lambda t: t.attempt.confidence)
