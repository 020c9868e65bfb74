"""Checkpoints of the tiny recursive models: loading and saving. Where they live, which are
good enough to serve (``SERVE_MIN_EXACT`` on their card) and which maze grids a served model
reads (:func:`maze_decline`, :func:`maze_accepts`) are torch-free, in
:mod:`workers.serving.catalog`, and re-exported here.

A checkpoint is ``<skill>-<model>-<size>.safetensors`` (or ``-f<frame>`` for a maze frame
model) plus a ``.json`` model card (config, recipe, seed, steps, wall time, hardware, measured
accuracy, calibration, date) in ``workers/checkpoints``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tinyfleet_core.errors import ConfigError
from workers.models.hrm import HRM, HRMConfig
from workers.models.trm import TRM, TRMConfig
from workers.serving.catalog import (
    CHECKPOINT_DIR,
    SERVE_MIN_EXACT,
    available_frames,
    available_sizes,
    checkpoint_path,
    frame_exact,
    has_checkpoint,
    maze_accepts,
    maze_decline,
    served_frames,
    served_sizes,
)
from workers.serving.checkpoint_io import load_weights, save_weights, set_torch_threads

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
