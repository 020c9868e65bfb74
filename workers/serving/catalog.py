"""Which tiny-model checkpoints are bundled and which are good enough to serve, read from
their files and model cards alone: no torch, so a ladder can be built (and a run that never
places a tiny tier can go) without importing it.

A checkpoint is ``<skill>-<model>-<size>.safetensors`` (or ``-f<frame>`` for a maze frame
model) plus a ``.json`` model card (config, recipe, seed, steps, wall time, hardware, measured
accuracy, calibration, date) in ``workers/checkpoints``. Loading one is
:mod:`workers.serving.neural_checkpoints` (TRM, HRM) and
:mod:`workers.serving.liquid_checkpoints` (CfC, LTC)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from workers.kits import maze
from workers.kits.maze_geometry import crop_border, frame_view

__all__ = [
    "CHECKPOINT_DIR",
    "checkpoint_path",
    "available_frames",
    "available_sizes",
    "SERVE_MIN_EXACT",
    "served_sizes",
    "frame_exact",
    "served_frames",
    "has_checkpoint",
    "maze_decline",
    "maze_accepts",
    "update_card",
]

CHECKPOINT_DIR = Path(__file__).resolve().parents[1] / "checkpoints"  # workers/checkpoints, the bundled ones


def checkpoint_path(skill: str, model: str, size: int, directory: Path | str | None = None, *, frame: bool = False) -> Path:
    """``<dir>/<skill>-<model>-<size>.safetensors``; a frame model (one checkpoint for every
    grid up to ``size`` x ``size``) is ``<skill>-<model>-f<size>.safetensors``."""
    return Path(directory or CHECKPOINT_DIR) / f"{skill}-{model}-{'f' if frame else ''}{size}.safetensors"


def _numbered(prefix: str, directory: Path | str | None) -> list[int]:
    """The N of every ``<prefix>N.safetensors`` in ``directory`` that has its card, ascending."""
    found = []
    for p in Path(directory or CHECKPOINT_DIR).glob(f"{prefix}*.safetensors"):
        tail = p.name[len(prefix) : -len(".safetensors")]
        if tail.isdigit() and p.with_suffix(".json").exists():
            found.append(int(tail))
    return sorted(found)


def available_frames(skill: str, model: str = "trm", directory: Path | str | None = None) -> list[int]:
    """Frames that have a frame checkpoint (``<skill>-<model>-f<F>``) with its card, ascending."""
    return _numbered(f"{skill}-{model}-f", directory)


def available_sizes(skill: str, model: str = "trm", directory: Path | str | None = None) -> list[int]:
    """Sizes that have a checkpoint for ``skill`` and ``model``, ascending."""
    return _numbered(f"{skill}-{model}-", directory)


SERVE_MIN_EXACT = 0.5
"""A checkpoint whose model card measured a lower exact accuracy is bundled but not served:
its answers would almost all climb to the next tier anyway."""


def served_sizes(
    skill: str, model: str = "trm", directory: Path | str | None = None, min_exact: float = SERVE_MIN_EXACT
) -> list[int]:
    """Sizes whose checkpoint's model card reports exact accuracy >= ``min_exact`` (a card
    without a measurement, or one that cannot be read, counts: loading it will tell)."""
    sizes = []
    for size in available_sizes(skill, model, directory):
        card_path = checkpoint_path(skill, model, size, directory).with_suffix(".json")
        try:
            exact = (json.loads(card_path.read_text()).get("eval") or {}).get("exact", 1.0)
        except (OSError, json.JSONDecodeError, AttributeError):
            exact = 1.0
        if exact >= min_exact:
            sizes.append(size)
    return sizes


def _frame_card(skill: str, model: str, frame: int, directory: Path | str | None) -> dict[str, Any]:
    try:
        card = json.loads(checkpoint_path(skill, model, frame, directory, frame=True).with_suffix(".json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return card if isinstance(card, dict) else {}


def frame_exact(card: dict[str, Any], family: str, rows: int, cols: int) -> float | None:
    """A frame model card's held-out exact accuracy on ``family`` at rows x cols, if measured."""
    for row in (card.get("takes") or {}).get("exact_by_family") or []:
        if row.get("family") == family and (row.get("rows"), row.get("cols")) == (rows, cols):
            return float(row["exact"])
    return None


def served_frames(
    skill: str, model: str = "trm", directory: Path | str | None = None, min_exact: float = SERVE_MIN_EXACT
) -> list[int]:
    """Frames whose frame checkpoint is good enough to serve: its card measured ``min_exact``
    or more on the training mixture or on one of the families and shapes it reports (a frame
    model serves many kinds of grid; what it gets wrong climbs to the next tier)."""
    frames = []
    for frame in available_frames(skill, model, directory):
        card = _frame_card(skill, model, frame, directory)
        best = [float((card.get("eval") or {}).get("exact", 1.0))]
        best += [float(r.get("exact", 0.0)) for r in (card.get("takes") or {}).get("exact_by_family") or []]
        if max(best) >= min_exact:
            frames.append(frame)
    return frames


def has_checkpoint(skill: str, model: str = "trm", directory: Path | str | None = None) -> bool:
    """True when at least one bundled checkpoint of ``model`` is good enough to serve ``skill``."""
    return bool(served_sizes(skill, model, directory) or served_frames(skill, model, directory))


def maze_decline(grid: Sequence[str], model: str = "trm", directory: Path | str | None = None) -> str | None:
    """None when a served ``model`` checkpoint reads ``grid`` (it fits a frame model's frame,
    or it is a square ringed maze of a per-size checkpoint's side), else why not."""
    h, w = len(grid), len(grid[0])
    frames = served_frames("maze.route", model, directory)
    if frames and not isinstance(frame_view(grid, frames[-1]), str):
        return None
    if h == w and h in served_sizes("maze.route", model, directory) and crop_border(grid) is not None:
        return None
    if frames:
        reason = frame_view(grid, frames[-1])
        assert isinstance(reason, str)
        return reason
    return f"no {model} checkpoint for {h}x{w} mazes" if crop_border(grid) is not None or h != w else "the maze has no wall border"


def maze_accepts(model: str = "trm", directory: Path | str | None = None) -> Callable[[BaseModel], bool]:
    """A ``Tier.accepts`` for a maze tier of ``model``: inputs :func:`maze_decline` lets through."""
    frames = served_frames("maze.route", model, directory)
    sizes = frozenset(served_sizes("maze.route", model, directory))

    def accepts(inp: BaseModel) -> bool:
        if not isinstance(inp, maze.MazeInput):
            return False
        g = inp.grid
        if frames and not isinstance(frame_view(g, frames[-1]), str):
            return True
        return len(g) == len(g[0]) and len(g) in sizes and crop_border(g) is not None

    return accepts


def update_card(checkpoint: Path | str, update: Callable[[dict[str, Any]], dict[str, Any]]) -> Path:
    """Rewrite the model card beside ``checkpoint`` as ``update(card)`` (calibration, serving
    profile: each changes its own key), atomically: a reader sees the old card or the new one."""
    card_path = Path(checkpoint).with_suffix(".json")
    card = json.loads(card_path.read_text())
    tmp = card_path.with_name(f".{card_path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(update(card), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, card_path)
    return card_path
