"""Command-line options of ``tinyfleet train`` for the tiny recursive models, kept free of
torch so the CLI can build its parser without importing it."""

from __future__ import annotations

import argparse

__all__ = ["add_train_options", "add_eval_options"]


def add_train_options(t: argparse.ArgumentParser) -> None:
    """The options of ``train`` past skill, model, size, seed and out (shared with the CLI)."""
    t.add_argument("--minutes", type=float, default=5.0, help="wall-clock training time")
    t.add_argument("--resume", default=None, help="checkpoint to continue from")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a model config or recipe field, e.g. --set d=192 --set lr=5e-4 (repeatable)")
    t.add_argument("--workers", type=int, default=1, help="processes that generate the training pool")
    t.add_argument("--data-cache", default=None, help="directory to keep generated training pools in")
    t.add_argument("--eval-n", type=int, default=500, help="held-out items in the final eval")


def add_eval_options(e: argparse.ArgumentParser) -> None:
    """The options of ``eval`` past skill, model, size, n, seed, checkpoint, halt and json."""
    return None
