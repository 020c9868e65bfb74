"""Command-line options of ``tinyfleet train`` and ``tinyfleet eval`` for the tiny recursive
models, kept free of torch so the CLI can build its parser without importing it."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["USER_CHECKPOINT_DIR", "add_train_options", "add_eval_options"]

USER_CHECKPOINT_DIR = Path("checkpoints")
"""Where ``tinyfleet train`` writes without ``--out``: ./checkpoints under the current directory.
The bundled ``workers/checkpoints`` is written only when ``--out`` names it."""

_FAMILIES = ("perfect", "loops", "random", "rooms")  # workers.kits.maze_families.FAMILIES (no import: light parser)


def add_train_options(t: argparse.ArgumentParser) -> None:
    """The options of ``train`` past skill, model, size, seed and out (shared with the CLI)."""
    t.epilog = (f"Without --out, the checkpoint and its model card go to ./{USER_CHECKPOINT_DIR} (created); "
                "the bundled workers/checkpoints is written only when --out names it.")
    t.add_argument("--minutes", type=float, default=5.0, help="wall-clock training time")
    t.add_argument("--resume", default=None, help="checkpoint to continue from")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a model config or recipe field, e.g. --set d=192 --set lr=5e-4 (repeatable)")
    t.add_argument("--workers", type=int, default=1, help="processes that generate the training pool")
    t.add_argument("--data-cache", default=None, help="directory to keep generated training pools in")
    t.add_argument("--eval-n", type=int, default=500, help="held-out items in the final eval")
    t.add_argument("--frame", type=int, default=0, metavar="F",
                   help="maze.route: train one model for every grid up to FxF (any shape, ring or not) on a "
                        "mixture of grid families; writes maze.route-MODEL-fF")
    t.add_argument("--report-n", type=int, default=200,
                   help="frame models: held-out items per family and size in the model card (0: no per-family report)")


def add_eval_options(e: argparse.ArgumentParser) -> None:
    """The options of ``eval`` past skill, model, size, n, seed, checkpoint, halt and json:
    a maze frame model on one family and shape."""
    e.add_argument("--family", default=None, choices=_FAMILIES,
                   help="maze.route: evaluate the frame model on this grid family "
                        "(with --rows/--cols, or --size N: perfect N odd is the kit's ringed maze)")
    e.add_argument("--rows", type=int, default=None, help="maze.route --family: grid rows")
    e.add_argument("--cols", type=int, default=None, help="maze.route --family: grid columns")
    e.add_argument("--calibrated", action="store_true",
                   help="halt and report confidence with the card's calibration, as the workers serve it "
                        "(default: the halting head's own rule)")
    e.add_argument("--givens", default=None, metavar="LO-HI",
                   help="sudoku.solve: held-out puzzles with this many clues (e.g. 22-29, the 9x9 hard band)")
    e.add_argument("--frame", type=int, default=None, metavar="F",
                   help="maze.route: which frame checkpoint (default: the largest bundled one when --family is given)")
