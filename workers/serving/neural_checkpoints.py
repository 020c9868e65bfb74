"""Checkpoints of the tiny recursive models: where they live, which are good enough to serve
(``SERVE_MIN_EXACT`` on their card), loading and saving, and which maze grids a served model
reads (:func:`maze_decline`, :func:`maze_accepts`).

A checkpoint is ``<skill>-<model>-<size>.safetensors`` (or ``-f<frame>`` for a maze frame
model) plus a ``.json`` model card (config, recipe, seed, steps, wall time, hardware, measured
accuracy, calibration, date) in ``workers/checkpoints``."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from tinyfleet_core.errors import ConfigError
from workers.kits import maze
from workers.models.hrm import HRM, HRMConfig
from workers.models.trm import TRM, TRMConfig
from workers.serving.checkpoint_io import CHECKPOINT_DIR, load_weights, save_weights, set_torch_threads
from workers.serving.neural_encoding import crop_border, frame_view

_SKILL_TAG = {"sudoku.solve": "sudoku", "maze.route": "maze"}


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
    "build_model",
    "save_checkpoint",
    "load_checkpoint",
    "set_torch_threads",
]


# --------------------------------------------------------------------------------------- #
# checkpoints


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


def build_model(card: dict[str, Any]) -> TRM | HRM:
    """A fresh model of the kind and config a model card names."""
    cfg = card.get("config", {})
    kind = cfg.get("kind", "trm")
    if kind == "trm":
        return TRM(TRMConfig.from_dict(cfg))
    if kind == "hrm":
        return HRM(HRMConfig.from_dict(cfg))
    raise ConfigError(f"model card names unknown model kind {kind!r}; expected 'trm' or 'hrm'")


def save_checkpoint(path: Path, state: dict[str, torch.Tensor], card: dict[str, Any]) -> None:
    """Write weights (safetensors) and the model card (json) side by side."""
    save_weights(path, state, card)


def load_checkpoint(path: Path | str, device: str = "cpu") -> tuple[TRM | HRM, dict[str, Any]]:
    """Load a checkpoint and its model card; the model is on ``device`` in eval mode.

    Raises ConfigError naming the file when it is missing, unreadable or of the wrong shape."""
    fix = f"re-train it with `tinyfleet train --skill ...` or delete {Path(path).name} and its .json"
    return load_weights(path, build_model, fix, device)
