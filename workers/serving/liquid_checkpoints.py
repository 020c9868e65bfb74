"""Liquid checkpoints: ``workers/checkpoints/<skill>-<model>.safetensors`` (weights, float32)
plus a ``.json`` model card beside them (config, recipe, seed, steps, wall time, measured
accuracy, date), and torch's thread setting for the workers that load them. The anomaly scorer
reuses the CfC forecast checkpoint: its scores are one-step forecast residuals."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tinyfleet_core.errors import ConfigError
from workers.models.liquid import LiquidConfig, LiquidForecaster

__all__ = ["CHECKPOINT_DIR", "checkpoint_path", "load_checkpoint", "save_checkpoint", "set_torch_threads"]

CHECKPOINT_DIR = Path(__file__).resolve().parents[1] / "checkpoints"  # workers/checkpoints


def checkpoint_path(skill: str, model: str, directory: Path | str | None = None) -> Path:
    return Path(directory or CHECKPOINT_DIR) / f"{skill}-{model}.safetensors"


def save_checkpoint(path: Path, model: LiquidForecaster, card: dict[str, Any]) -> None:
    """Write weights (safetensors) and the model card (``.json`` beside them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().float() for k, v in model.state_dict().items()}
    card = {**card, "config": asdict(model.cfg)}
    save_file(state, str(path), metadata={"config": json.dumps(asdict(model.cfg))})
    path.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")


def load_checkpoint(path: Path | str) -> tuple[LiquidForecaster, dict[str, Any]]:
    """Load weights and card; ConfigError naming the file when anything is wrong."""
    path = Path(path)
    fix = "re-train it with `tinyfleet train --skill series.forecast --model cfc|ltc`"
    if not path.exists():
        raise ConfigError(f"checkpoint {path} does not exist; {fix}")
    card_path = path.with_suffix(".json")
    try:
        card = json.loads(card_path.read_text())
        cfg = LiquidConfig(**card["config"])
    except FileNotFoundError:
        raise ConfigError(f"checkpoint {path} has no model card {card_path.name}; {fix}") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ConfigError(f"model card {card_path} is unreadable ({type(e).__name__}: {e}); {fix}") from None
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ConfigError(f"checkpoint {path} is not a readable safetensors file ({e}); {fix}") from None
    model = LiquidForecaster(cfg)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[:2]
        raise ConfigError(f"checkpoint {path} does not match its model card's config ({' '.join(first)}); {fix}") from None
    model.eval()
    return model, card


def set_torch_threads() -> int:
    """Set torch's intra-op threads: 1 unless TINYFLEET_TORCH_THREADS says otherwise."""
    raw = os.environ.get("TINYFLEET_TORCH_THREADS", "1")
    try:
        n = int(raw)
    except ValueError:
        raise ConfigError(f"TINYFLEET_TORCH_THREADS must be a positive integer, got {raw!r}") from None
    if n < 1:
        raise ConfigError(f"TINYFLEET_TORCH_THREADS must be a positive integer, got {raw!r}")
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
