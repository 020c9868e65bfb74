"""Checkpoint and model-card I/O for every tiny-model family (TRM, HRM, CfC, LTC), written once.

A checkpoint is a ``.safetensors`` file of weights with a ``.json`` model card beside it (the
config the model is built from, the recipe, seed, measured accuracy, calibration). Each family
says how to build a model from its card; everything else (reading, checking, the errors that
name the file and the fix) is here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from tinyfleet_core.errors import ConfigError
from workers.serving.catalog import CHECKPOINT_DIR

__all__ = ["CHECKPOINT_DIR", "save_weights", "load_weights", "read_card", "set_torch_threads"]

M = TypeVar("M", bound=nn.Module)


def save_weights(path: Path, state: dict[str, torch.Tensor], card: dict[str, Any]) -> None:
    """Write weights (safetensors, on CPU, contiguous) and the model card (json) side by side."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    save_file(tensors, str(path), metadata={"card": path.with_suffix(".json").name})
    path.with_suffix(".json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")


def read_card(path: Path, fix: str) -> dict[str, Any]:
    """The model card beside checkpoint ``path``; ConfigError naming the file and ``fix``."""
    card_path = path.with_suffix(".json")
    if not path.exists():
        raise ConfigError(f"checkpoint {path} does not exist; {fix}")
    if not card_path.exists():
        raise ConfigError(f"checkpoint {path} has no model card {card_path.name}; {fix}")
    try:
        card = json.loads(card_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"model card {card_path} is not valid JSON ({e}); {fix}") from None
    if not isinstance(card, dict) or not isinstance(card.get("config"), dict):
        raise ConfigError(f"model card {card_path} has no 'config' entry; {fix}")
    return card


def load_weights(path: Path | str, build: Callable[[dict[str, Any]], M], fix: str, device: str = "cpu") -> tuple[M, dict[str, Any]]:
    """Build the model ``build(card)`` names, load its weights strictly, and return it on
    ``device`` in eval mode with its card. Every failure is a ConfigError naming the file."""
    path = Path(path)
    card = read_card(path, fix)
    try:
        model = build(card)
    except (TypeError, ValueError, KeyError) as e:
        raise ConfigError(f"model card {path.with_suffix('.json')} holds a config this code cannot build ({e}); {fix}") from None
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ConfigError(f"checkpoint {path} is not a readable safetensors file ({e}); {fix}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise ConfigError(f"checkpoint {path} does not match its model card's config ({' '.join(first[:2])}); {fix}") from None
    model.to(device).eval()
    return model, card


def set_torch_threads() -> int:
    """Set torch's intra-op threads: 1 unless TINYFLEET_TORCH_THREADS says otherwise."""
    raw = os.environ.get("TINYFLEET_TORCH_THREADS", "1")
    try:
        k = int(raw)
    except ValueError:
        raise ConfigError(f"TINYFLEET_TORCH_THREADS must be a positive integer, got {raw!r}") from None
    if k < 1:
        raise ConfigError(f"TINYFLEET_TORCH_THREADS must be a positive integer, got {raw!r}")
    if torch.get_num_threads() != k:
        torch.set_num_threads(k)
    return k
