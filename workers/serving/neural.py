"""Inference workers for the tiny recursive models (TRM, HRM), their checkpoints, and the
grid encodings shared with training.

A checkpoint is ``<skill>-<model>-<size>.safetensors`` plus a ``.json`` model card (config,
recipe, seed, steps, wall time, hardware, measured accuracy, date) in ``workers/checkpoints``.
Workers load every checkpoint of their skill and model in ``setup(device)`` and serve each
input with the checkpoint of its size; an input of a size without a checkpoint gets no answer
(``output=None``), so the step climbs to the next tier.
"""

from __future__ import annotations

import json
import os
import random
import time
import warnings
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tinyfleet_core.errors import ConfigError
from tinyfleet_core.models import Attempt
from workers.base import Job, Worker
from workers.kits import maze, sudoku
from workers.models.hrm import HRM, HRMConfig
from workers.models.trm import TRM, TRMConfig, run_recursive

__all__ = [
    "CHECKPOINT_DIR",
    "Dihedral",
    "HRMMazeWorker",
    "HRMSudokuWorker",
    "TRMMazeWorker",
    "TRMSudokuWorker",
    "available_sizes",
    "build_model",
    "checkpoint_path",
    "crop_border",
    "decode_maze",
    "dihedral",
    "has_checkpoint",
    "load_checkpoint",
    "maze_labels",
    "maze_seq_len",
    "maze_tokens",
    "save_checkpoint",
    "served_sizes",
    "set_torch_threads",
    "sudoku_tokens",
]

CHECKPOINT_DIR = Path(__file__).resolve().parents[1] / "checkpoints"  # workers/checkpoints
_SKILL_TAG = {"sudoku.solve": "sudoku", "maze.route": "maze"}


# --------------------------------------------------------------------------------------- #
# checkpoints


def checkpoint_path(skill: str, model: str, size: int, directory: Path | str | None = None) -> Path:
    """``<dir>/<skill>-<model>-<size>.safetensors``."""
    return Path(directory or CHECKPOINT_DIR) / f"{skill}-{model}-{size}.safetensors"


def available_sizes(skill: str, model: str = "trm", directory: Path | str | None = None) -> list[int]:
    """Sizes that have a checkpoint for ``skill`` and ``model``, ascending."""
    d = Path(directory or CHECKPOINT_DIR)
    prefix = f"{skill}-{model}-"
    sizes = []
    for p in d.glob(f"{prefix}*.safetensors"):
        tail = p.name[len(prefix) : -len(".safetensors")]
        if tail.isdigit() and p.with_suffix(".json").exists():
            sizes.append(int(tail))
    return sorted(sizes)


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


def has_checkpoint(skill: str, model: str = "trm", directory: Path | str | None = None) -> bool:
    """True when at least one bundled checkpoint of ``model`` is good enough to serve ``skill``."""
    return bool(served_sizes(skill, model, directory))


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
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    save_file(tensors, str(path), metadata={"card": path.with_suffix(".json").name})
    path.with_suffix(".json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")


def load_checkpoint(path: Path | str, device: str = "cpu") -> tuple[TRM | HRM, dict[str, Any]]:
    """Load a checkpoint and its model card; the model is on ``device`` in eval mode.

    Raises ConfigError naming the file when it is missing, unreadable or of the wrong shape."""
    path = Path(path)
    card_path = path.with_suffix(".json")
    fix = f"re-train it with `tinyfleet train` (README, section Tiny recursive models) or delete {path.name} and its .json"
    if not path.exists():
        raise ConfigError(f"checkpoint {path} does not exist; train one with `tinyfleet train`")
    if not card_path.exists():
        raise ConfigError(f"checkpoint {path} has no model card {card_path.name}; {fix}")
    try:
        card = json.loads(card_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"model card {card_path} is not valid JSON ({e}); {fix}") from None
    if not isinstance(card, dict) or "config" not in card:
        raise ConfigError(f"model card {card_path} has no 'config' entry; {fix}")
    try:
        model = build_model(card)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model card {card_path} holds a config this code cannot build ({e}); {fix}") from None
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ConfigError(f"checkpoint {path} is not a readable safetensors file ({e}); {fix}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise ConfigError(
            f"checkpoint {path} does not match its model card's config ({' '.join(first[:2])}); {fix}"
        ) from None
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
    torch.set_num_threads(k)
    return k


# --------------------------------------------------------------------------------------- #
# encodings shared by training and inference

MAZE_CODE = {"#": 0, ".": 1, "S": 2, "G": 3}


def sudoku_tokens(puzzles: Sequence[Sequence[Sequence[int]]]) -> np.ndarray:
    """(B, n*n) int64 of cell values, 0 = blank; vocab n + 1. Answer labels are digit - 1."""
    return np.asarray([[v for row in p for v in row] for p in puzzles], dtype=np.int64)


def maze_tokens(grids: Sequence[Sequence[str]]) -> np.ndarray:
    """(B, h*w) int64: 0 wall, 1 open, 2 start, 3 goal."""
    return np.asarray([[MAZE_CODE[ch] for row in g for ch in row] for g in grids], dtype=np.int64)


def maze_labels(grids: Sequence[Sequence[str]]) -> np.ndarray:
    """(B, h*w) int64: 1 on the shortest S -> G path (both ends included), else 0."""
    out = np.zeros((len(grids), len(grids[0]) * len(grids[0][0])), dtype=np.int64)
    for k, g in enumerate(grids):
        w = len(g[0])
        for r, c in maze.bfs_path(g):
            out[k, r * w + c] = 1
    return out


def crop_border(grid: Sequence[str]) -> list[str] | None:
    """The inside of a grid whose outer ring is all wall (the model never sees the ring);
    None when the ring has an open cell."""
    h, w = len(grid), len(grid[0])
    ring = grid[0] + grid[-1] + "".join(row[0] + row[-1] for row in grid)
    if h < 3 or w < 3 or set(ring) != {"#"}:
        return None
    return [row[1:-1] for row in grid[1:-1]]


def maze_seq_len(side: int) -> int:
    """Cells a maze model of grid side ``side`` sees: the interior, (side - 2) ** 2."""
    return (side - 2) ** 2


def decode_maze(grid: Sequence[str], on_path: np.ndarray) -> list[tuple[int, int]] | None:
    """A path from S to G through open cells the model marked on-path, found by walking the
    marked cells from S (breadth first); None when the marks do not connect S to G."""
    h, w = len(grid), len(grid[0])
    start, goal = maze.find_cell(grid, "S"), maze.find_cell(grid, "G")
    marked = on_path.reshape(h, w).astype(bool)
    prev: dict[tuple[int, int], tuple[int, int] | None] = {start: None}
    queue = deque([start])
    while queue:
        r, c = queue.popleft()
        if (r, c) == goal:
            path = [goal]
            while (p := prev[path[-1]]) is not None:
                path.append(p)
            return path[::-1]
        for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if (
                0 <= nr < h
                and 0 <= nc < w
                and (nr, nc) not in prev
                and grid[nr][nc] != "#"
                and (marked[nr, nc] or (nr, nc) == goal)
            ):
                prev[(nr, nc)] = (r, c)
                queue.append((nr, nc))
    return None


@dataclass(frozen=True)
class Dihedral:
    """One of the 8 symmetries of a square grid: ``k`` quarter turns, then a mirror."""

    k: int
    flip: bool

    def apply(self, grid: Sequence[str]) -> list[str]:
        a = np.array([list(row) for row in grid])
        a = np.rot90(a, self.k)
        if self.flip:
            a = a[:, ::-1]
        return ["".join(row) for row in a]

    def invert_cell(self, cell: tuple[int, int], side: int) -> tuple[int, int]:
        """Map a cell of the transformed grid back to the original grid."""
        idx = np.arange(side * side).reshape(side, side)
        t = np.rot90(idx, self.k)
        if self.flip:
            t = t[:, ::-1]
        orig = int(t[cell])
        return (orig // side, orig % side)


def dihedral(particle: int) -> Dihedral:
    """Particle 0 is the identity; particles 1..7 are the other symmetries (then they repeat)."""
    p = particle % 8
    return Dihedral(p % 4, p >= 4)


# --------------------------------------------------------------------------------------- #
# workers


class _RecursiveWorker(Worker):
    """Loads every checkpoint of (skill, model) and dispatches each row to its size's model."""

    model_kind: ClassVar[str] = "trm"
    min_exact: ClassVar[float] = SERVE_MIN_EXACT
    stochastic = True
    checkpoint_dir: Path | None = None

    def setup(self, device: str = "cpu") -> None:
        if device.startswith("cuda") and not torch.cuda.is_available():
            warnings.warn(f"worker {self.name!r} was given {device!r} but torch sees no GPU; running on CPU", stacklevel=2)
            device = "cpu"
        super().setup(device)
        set_torch_threads()
        self.models: dict[int, tuple[TRM | HRM, dict[str, Any]]] = {}
        for size in served_sizes(self.skill, self.model_kind, self.checkpoint_dir, self.min_exact):
            path = checkpoint_path(self.skill, self.model_kind, size, self.checkpoint_dir)
            self.models[size] = load_checkpoint(path, device)
        if not self.models:
            where = self.checkpoint_dir or CHECKPOINT_DIR
            bundled = available_sizes(self.skill, self.model_kind, self.checkpoint_dir)
            why = (
                f"only checkpoints measured below {self.min_exact:.0%} exact (sizes {bundled})"
                if bundled
                else f"no {self.skill}-{self.model_kind}-*.safetensors"
            )
            raise ConfigError(f"worker {self.name!r} found {why} in {where}; train one with `tinyfleet train`")

    def _ensure(self) -> None:
        if not hasattr(self, "models"):
            self.setup(self.device)

    def _cap(self, job: Job, card: dict[str, Any]) -> int:
        default = int(card.get("infer_steps", card["config"]["N_sup"]))
        return max(1, min(default, job.max_depth)) if job.max_depth else default

    def _run(self, size: int, tokens: np.ndarray, caps: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        model, _ = self.models[size]
        t = torch.from_numpy(tokens).to(self.device)
        res = run_recursive(model, t, torch.tensor(caps, dtype=torch.long), halt=True)
        return res.pred.cpu().numpy(), res.confidence.cpu().numpy(), res.steps.cpu().numpy()


class _SudokuWorker(_RecursiveWorker):
    skill = "sudoku.solve"

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        self._ensure()
        t0 = time.perf_counter()
        out: list[Attempt | None] = [None] * len(jobs)
        groups: dict[int, list[int]] = {}
        views: list[tuple[list[list[int]], sudoku.Transform | None]] = []
        for k, job in enumerate(jobs):
            assert isinstance(job.input, sudoku.SudokuInput)
            puzzle = job.input.puzzle
            n = len(puzzle)
            tf = None if job.particle == 0 else sudoku.random_transform(n, random.Random(job.particle))
            views.append((tf.apply(puzzle) if tf else puzzle, tf))
            if n in self.models:
                groups.setdefault(n, []).append(k)
            else:
                out[k] = self.attempt(None, 0.0, job=job, error=f"no {self.model_kind} checkpoint for {n}x{n} sudoku")
        for n, idx in groups.items():
            _, card = self.models[n]
            tokens = sudoku_tokens([views[k][0] for k in idx])
            pred, conf, steps = self._run(n, tokens, [self._cap(jobs[k], card) for k in idx])
            dt = (time.perf_counter() - t0) / len(jobs)
            for row, k in enumerate(idx):
                seen, tf = views[k]
                grid = [[int(pred[row, r * n + c]) + 1 for c in range(n)] for r in range(n)]
                grid = [[g if g else v for g, v in zip(grow, vrow)] for grow, vrow in zip(seen, grid)]  # keep givens
                answer = tf.invert(grid) if tf else grid
                out[k] = self.attempt(
                    sudoku.SudokuOutput(solution=answer),
                    float(conf[row]),
                    job=jobs[k],
                    seconds=dt,
                    recursion_steps=int(steps[row]),
                    size=n,
                )
        return [a for a in out if a is not None]


class _MazeWorker(_RecursiveWorker):
    skill = "maze.route"

    def setup(self, device: str = "cpu") -> None:
        super().setup(device)
        for side, (_, card) in self.models.items():
            if card["config"]["seq_len"] != maze_seq_len(side):
                path = checkpoint_path(self.skill, self.model_kind, side, self.checkpoint_dir)
                raise ConfigError(
                    f"checkpoint {path} sees {card['config']['seq_len']} cells but a {side}x{side} maze's "
                    f"interior has {maze_seq_len(side)}; re-train it with `tinyfleet train --skill maze.route`"
                )

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        self._ensure()
        t0 = time.perf_counter()
        out: list[Attempt | None] = [None] * len(jobs)
        groups: dict[int, list[int]] = {}
        views: list[tuple[list[str], Dihedral]] = []
        for k, job in enumerate(jobs):
            assert isinstance(job.input, maze.MazeInput)
            grid = job.input.grid
            h, w = len(grid), len(grid[0])
            tf = dihedral(job.particle)
            inner = crop_border(tf.apply(grid)) if h == w else None
            views.append((inner or [], tf))
            if inner is not None and h in self.models:
                groups.setdefault(h, []).append(k)
            else:
                why = f"no {self.model_kind} checkpoint for {h}x{w} mazes" if inner is not None or h != w else "the maze has no wall border"
                out[k] = self.attempt(None, 0.0, job=job, error=why)
        for side, idx in groups.items():
            _, card = self.models[side]
            tokens = maze_tokens([views[k][0] for k in idx])
            pred, conf, steps = self._run(side, tokens, [self._cap(jobs[k], card) for k in idx])
            dt = (time.perf_counter() - t0) / len(jobs)
            for row, k in enumerate(idx):
                inner, tf = views[k]
                path = decode_maze(inner, pred[row])
                if path is None:
                    out[k] = self.attempt(
                        None, 0.0, job=jobs[k], seconds=dt, recursion_steps=int(steps[row]),
                        error="predicted cells do not connect S to G",
                    )
                    continue
                back = [tf.invert_cell((r + 1, c + 1), side) for r, c in path]  # un-crop, then un-rotate
                out[k] = self.attempt(
                    maze.MazeOutput(path=back),
                    float(conf[row]),
                    job=jobs[k],
                    seconds=dt,
                    recursion_steps=int(steps[row]),
                    size=side,
                )
        return [a for a in out if a is not None]


class TRMSudokuWorker(_SudokuWorker):
    """TRM on sudoku: every bundled size; particles are sudoku augmentations mapped back."""

    name = "sudoku.trm"
    model_kind = "trm"


class HRMSudokuWorker(_SudokuWorker):
    """HRM on sudoku, same interface as :class:`TRMSudokuWorker`."""

    name = "sudoku.hrm"
    model_kind = "hrm"


class TRMMazeWorker(_MazeWorker):
    """TRM on square mazes of a bundled size: per-cell on-path labels decoded into a path;
    particles are the 8 grid symmetries mapped back."""

    name = "maze.trm"
    model_kind = "trm"


class HRMMazeWorker(_MazeWorker):
    """HRM on square mazes, same interface as :class:`TRMMazeWorker`."""

    name = "maze.hrm"
    model_kind = "hrm"
