"""Which bundled TRM checkpoints the product workers actually serve.

A recursive worker loads every checkpoint of its skill but serves only those whose model
card measured at least ``min_exact`` whole-answer accuracy (``workers.serving.neural``); the
benchmarks measure what the product runs, and say which checkpoints they skip and why."""

from __future__ import annotations

import json
from typing import Any

from workers.serving.neural import _RecursiveWorker, available_sizes, checkpoint_path

__all__ = ["card", "card_exact", "served_sizes", "unserved_note"]


def card(skill: str, model: str, size: int) -> dict[str, Any]:
    data = json.loads(checkpoint_path(skill, model, size).with_suffix(".json").read_text())
    return data if isinstance(data, dict) else {}


def card_exact(skill: str, model: str, size: int) -> float:
    """The model card's measured exact accuracy (1.0 when the card has none, as the worker reads it)."""
    return float((card(skill, model, size).get("eval") or {}).get("exact", 1.0))


def served_sizes(skill: str, model: str = "trm") -> list[int]:
    """Sizes whose checkpoint the product worker serves, ascending."""
    return [s for s in available_sizes(skill, model) if card_exact(skill, model, s) >= _RecursiveWorker.min_exact]


def unserved_note(skill: str, model: str = "trm") -> str:
    """'' or a clause naming the bundled checkpoints the worker does not serve."""
    skipped = [s for s in available_sizes(skill, model) if s not in served_sizes(skill, model)]
    if not skipped:
        return ""
    what = ", ".join(f"{s}x{s} ({100 * card_exact(skill, model, s):.0f}% exact)" for s in skipped)
    return f"{skill} {model} checkpoints bundled but under the worker's {100 * _RecursiveWorker.min_exact:.0f}% bar, so not served: {what}"
