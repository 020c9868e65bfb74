"""How a tiny recursive model is best served on this kind of machine: the batch size that gives
the most items per CPU-second, measured once per checkpoint and kept in its model card.

A TRM or HRM this small is compute-bound on a CPU core already at batch 1; a larger batch helps
only while its activations stay in cache. Past that, items per CPU-second fall: the 9x9 sudoku
TRM does fewer items per CPU-second at batch 256 than at batch 1. A pool is handed up to its
``max_batch`` jobs at once (256 for the tiny tiers), so the worker runs them in chunks of the
measured best batch (:func:`chunk_spans`), and a pool handed 256 items runs at the best
batch's speed.

``python -m workers.training.tune_serving`` (``tinyfleet tune-serving``) measures it and writes
the block into the card under ``"serving"``::

    "serving": {
      "best_batch": 16,                       # read by the workers (the rest is the record)
      "items_per_cpu_s": {"1": 95.0, ...},    # the curve, batch -> items per CPU-second
      "at_batch_1": 95.0, "at_best": 106.0, "at_256": 60.0,
      "machine": {...}, "date": "...", "command": "...", ...
    }

A card without the block is served as before (one forward pass per group, whatever its size).
No torch here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tinyfleet_core.errors import ConfigError
from workers.serving.card_block import CardBlock

__all__ = ["CARD_KEY", "MAX_BATCH", "ServingProfile", "chunk_spans"]

CARD_KEY = "serving"
MAX_BATCH = 65536  # a best batch above this is a typo, not a measurement
_FIX = "re-run `python -m workers.training.tune_serving` on the checkpoint, or delete the card's \"serving\" key"
_NUMBERS = ("at_batch_1", "at_best", "at_256")


@dataclass(frozen=True)
class ServingProfile(CardBlock):
    """One checkpoint's measured serving batch (``best_batch``) and what was measured."""

    CARD_KEY: ClassVar[str] = CARD_KEY

    best_batch: int
    measured: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.best_batch, bool) or not isinstance(self.best_batch, int) or not 1 <= self.best_batch <= MAX_BATCH:
            raise ConfigError(f"serving.best_batch must be an integer in [1, {MAX_BATCH}], got {self.best_batch!r}; {_FIX}")

    def to_dict(self) -> dict[str, Any]:
        return {**dict(self.measured), "best_batch": self.best_batch}

    @classmethod
    def from_dict(cls, block: object, where: str = CARD_KEY) -> ServingProfile:
        """Parse a card's block; a ConfigError naming ``where`` and the bad field otherwise."""
        if not isinstance(block, Mapping):
            raise ConfigError(f"{where} must be an object with best_batch, got {type(block).__name__}; {_FIX}")
        best = block.get("best_batch")
        if isinstance(best, bool) or not isinstance(best, int) or not 1 <= best <= MAX_BATCH:
            raise ConfigError(f"{where}.best_batch must be an integer in [1, {MAX_BATCH}], got {best!r}; {_FIX}")
        for name in _NUMBERS:
            v = block.get(name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0):
                raise ConfigError(f"{where}.{name} must be a non-negative number (items per CPU-second), got {v!r}; {_FIX}")
        curve = block.get("items_per_cpu_s", {})
        if not isinstance(curve, Mapping) or not all(
            str(k).isdigit() and isinstance(v, (int, float)) and not isinstance(v, bool) for k, v in curve.items()
        ):
            raise ConfigError(f"{where}.items_per_cpu_s must map batch sizes to items per CPU-second; {_FIX}")
        return cls(best, {k: v for k, v in block.items() if k != "best_batch"})


def chunk_spans(n: int, batch: int | None) -> list[tuple[int, int]]:
    """``[start, stop)`` spans covering ``range(n)`` in chunks of ``batch`` (one span when
    ``batch`` is None). The last chunk takes the remainder."""
    if n <= 0:
        return []
    if batch is None or batch >= n:
        return [(0, n)]
    return [(s, min(n, s + batch)) for s in range(0, n, batch)]
