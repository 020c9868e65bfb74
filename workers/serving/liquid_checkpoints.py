"""Liquid checkpoints: ``workers/checkpoints/<skill>-<model>.safetensors`` (weights, float32)
plus a ``.json`` model card beside them (config, recipe, seed, steps, wall time, measured
accuracy, date), read and written by :mod:`workers.serving.checkpoint_io`. The anomaly scorer
reuses the CfC forecast checkpoint: its scores are one-step forecast residuals."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from workers.models.liquid import LiquidConfig, LiquidForecaster
from workers.models.ssm import SSMConfig, StateSpaceForecaster
from workers.serving.checkpoint_io import CHECKPOINT_DIR, load_weights, save_weights, set_torch_threads

__all__ = ["CHECKPOINT_DIR", "SeriesModel", "build_model", "checkpoint_path", "load_checkpoint", "save_checkpoint",
           "set_torch_threads"]

SeriesModel = LiquidForecaster | StateSpaceForecaster
"""A series forecaster: both read the same window and answer (B, H, 3) ordered quantiles."""


def build_model(cfg: LiquidConfig | SSMConfig) -> SeriesModel:
    """A fresh model for ``cfg`` (the state-space one for an :class:`SSMConfig`)."""
    return StateSpaceForecaster(cfg) if isinstance(cfg, SSMConfig) else LiquidForecaster(cfg)


def checkpoint_path(skill: str, model: str, directory: Path | str | None = None) -> Path:
    return Path(directory or CHECKPOINT_DIR) / f"{skill}-{model}.safetensors"


def save_checkpoint(path: Path, model: SeriesModel, card: dict[str, Any]) -> None:
    """Write weights (safetensors) and the model card (``.json`` beside them)."""
    state = {k: v.float() for k, v in model.state_dict().items()}
    save_weights(path, state, {**card, "config": asdict(model.cfg)})


def _build(card: dict[str, Any]) -> SeriesModel:
    config = card["config"]
    return build_model(SSMConfig(**config) if config.get("cell") == "ssm" else LiquidConfig(**config))


def load_checkpoint(path: Path | str) -> tuple[SeriesModel, dict[str, Any]]:
    """Load weights and card; ConfigError naming the file when anything is wrong."""
    return load_weights(path, _build, "re-train it with `tinyfleet train --skill series.forecast --model cfc|ltc|ssm`")
