"""Inference workers for the tiny recursive models (TRM, HRM), their checkpoints, and the
grid encodings shared with training.

A checkpoint is ``<skill>-<model>-<size>.safetensors`` plus a ``.json`` model card (config,
recipe, seed, steps, wall time, hardware, measured accuracy, date) in ``workers/checkpoints``.
Workers load every checkpoint of their skill and model in ``setup(device)`` and serve each
input with the checkpoint of its size; an input of a size without a checkpoint gets no answer
(``output=None``), so the step climbs to the next tier.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tinyfleet_core.errors import ConfigError
from tinyfleet_core.models import Attempt
from workers.base import Job, Worker
from workers.kits import maze, sudoku
from workers.models.hrm import HRM, HRMConfig
from workers.models.trm import IGNORE, TRM, TRMConfig, run_recursive
from workers.serving.calibration import Calibration

__all__ = [
    "CHECKPOINT_DIR",
    "Dihedral",
    "HRMMazeWorker",
    "HRMSudokuWorker",
    "TRMMazeWorker",
    "TRMSudokuWorker",
    "available_frames",
    "available_sizes",
    "build_model",
    "checkpoint_path",
    "crop_border",
    "decode_maze",
    "dihedral",
    "has_checkpoint",
    "load_checkpoint",
    "exact_path",
    "frame_embed",
    "frame_labels",
    "frame_side",
    "frame_sides",
    "frame_state",
    "sub_model",
    "frame_marks",
    "frame_tokens",
    "frame_view",
    "MAZE_PAD",
    "maze_accepts",
    "maze_decline",
    "frame_exact",
    "served_frames",
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


def checkpoint_path(skill: str, model: str, size: int, directory: Path | str | None = None, *, frame: bool = False) -> Path:
    """``<dir>/<skill>-<model>-<size>.safetensors``; a frame model (one checkpoint for every
    grid up to ``size`` x ``size``) is ``<skill>-<model>-f<size>.safetensors``."""
    return Path(directory or CHECKPOINT_DIR) / f"{skill}-{model}-{'f' if frame else ''}{size}.safetensors"


def available_frames(skill: str, model: str = "trm", directory: Path | str | None = None) -> list[int]:
    """Frames that have a frame checkpoint (``<skill>-<model>-f<F>``) with its card, ascending."""
    d = Path(directory or CHECKPOINT_DIR)
    prefix = f"{skill}-{model}-f"
    frames = []
    for p in d.glob(f"{prefix}*.safetensors"):
        tail = p.name[len(prefix) : -len(".safetensors")]
        if tail.isdigit() and p.with_suffix(".json").exists():
            frames.append(int(tail))
    return sorted(frames)


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


MAZE_PAD = 4
"""The token of a frame cell outside the grid (maze vocab 5 in a frame model)."""


def frame_view(grid: Sequence[str], frame: int) -> tuple[list[str], int] | str:
    """Where ``grid`` lies in a ``frame`` x ``frame`` model: (the grid the model reads, its
    offset in ``grid``). A wall ring is always cropped off (it holds nothing a path can use),
    so a ringed grid of up to (frame + 2) x (frame + 2) fits; the rest is placed at the frame's
    top-left corner and padded. A grid too large for the frame gives the reason, as a str."""
    h, w = len(grid), len(grid[0])
    inner = crop_border(grid)
    seen, off = (inner, 1) if inner is not None else (list(grid), 0)
    if len(seen) > frame or len(seen[0]) > frame:
        return (f"the grid is {h}x{w}, larger than this model's {frame}x{frame} frame (it reads grids "
                f"up to {frame}x{frame}, or {frame + 2}x{frame + 2} with a wall ring); the next tier routes it")
    return seen, off


def frame_tokens(grids: Sequence[Sequence[str]], frame: int) -> np.ndarray:
    """(B, frame*frame) int64: each grid at the frame's top-left, 0 wall, 1 open, 2 start,
    3 goal, MAZE_PAD outside the grid. Grids must fit (see :func:`frame_view`)."""
    out = np.full((len(grids), frame, frame), MAZE_PAD, dtype=np.int64)
    for k, g in enumerate(grids):
        out[k, : len(g), : len(g[0])] = [[MAZE_CODE[ch] for ch in row] for row in g]
    return out.reshape(len(grids), frame * frame)


def frame_labels(grids: Sequence[Sequence[str]], frame: int) -> np.ndarray:
    """(B, frame*frame) int64: 1 on the grid's canonical shortest path
    (:func:`maze.canonical_path`), 0 elsewhere in the grid, IGNORE (-100) on padding."""
    out = np.full((len(grids), frame, frame), IGNORE, dtype=np.int64)
    for k, g in enumerate(grids):
        out[k, : len(g), : len(g[0])] = 0
        for r, c in maze.canonical_path(g):
            out[k, r, c] = 1
    return out.reshape(len(grids), frame * frame)


def frame_sides(frame: int, mixer: str = "attn") -> tuple[int, ...]:
    """The square sub-frames (top-left side x side of the frame) a frame model runs a grid
    in: the smallest that holds it. Attention reads any length, so small grids cost little
    (positions are the frame's own); a sequence-MLP model reads only the whole frame."""
    return (*(b for b in (6, 8, 10, 12, 15, 20, 25) if b < frame), frame) if mixer == "attn" else (frame,)


def frame_side(rows: int, cols: int, frame: int, mixer: str = "attn") -> int:
    """The sub-frame side a rows x cols grid (as the model reads it, ring cropped) runs in."""
    return next(b for b in frame_sides(frame, mixer) if b >= max(rows, cols))


def _frame_index(frame: int, side: int, prefix: int) -> torch.Tensor:
    """Positions of the prefix and of the top-left side x side cells of a frame x frame grid."""
    r = torch.arange(side)
    cells = (r[:, None] * frame + r[None, :]).reshape(-1) + prefix
    return torch.cat([torch.arange(prefix), cells])


def frame_embed(model: TRM, tokens: torch.Tensor, frame: int, side: int) -> torch.Tensor:
    """``model.embed`` for a grid in the top-left side x side of the frame: (B, side*side)
    -> (B, P + side*side, D), the frame's positions for those cells (keeps gradients)."""
    P = model.cfg.prefix
    cells = model.tok(tokens) * math.sqrt(model.cfg.d)  # (B, s*s, D)
    pre = model.prefix[:P].expand(tokens.shape[0], -1, -1)  # (B, P, D)
    idx = _frame_index(frame, side, P).to(model.pos.device)
    return torch.cat([pre, cells], 1) + model.pos[idx]


def frame_state(model: TRM, batch: int, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``model.init_state`` for a side x side sub-frame."""
    L = model.cfg.prefix + side * side
    return model.y0.expand(batch, L, -1).clone(), model.z0.expand(batch, L, -1).clone()


def sub_model(model: TRM, frame: int, side: int) -> TRM:
    """A TRM reading the top-left side x side of ``model``'s frame, exactly as ``model``
    does (its weights shared, positions gathered from the frame's): what inference runs a
    small grid in. ``side == frame`` is ``model`` itself."""
    if side == frame:
        return model
    if model.cfg.mixer != "attn" or not isinstance(model, TRM):
        raise ConfigError(f"only an attention TRM runs in a sub-frame; this one is {model.cfg.kind} {model.cfg.mixer}")
    sub = TRM(dataclasses.replace(model.cfg, seq_len=side * side))
    sub.tok, sub.net, sub.out_head, sub.halt_head = model.tok, model.net, model.out_head, model.halt_head
    sub.prefix = model.prefix
    with torch.no_grad():
        sub.pos = torch.nn.Parameter(model.pos[_frame_index(frame, side, model.cfg.prefix).to(model.pos.device)].clone())
        sub.y0.copy_(model.y0)
        sub.z0.copy_(model.z0)
    return sub.to(model.pos.device).eval() if not model.training else sub.to(model.pos.device)


def frame_marks(pred: np.ndarray, rows: int, cols: int, frame: int) -> np.ndarray:
    """The (rows, cols) on-path marks of a grid placed in the frame, from one row of
    predictions (frame*frame,)."""
    return np.asarray(pred).reshape(frame, frame)[:rows, :cols]


def exact_path(grid: Sequence[str], on_path: np.ndarray) -> list[tuple[int, int]] | None:
    """The path when the cells marked on-path are exactly one shortest S -> G path (no
    extra marked cell, no connected superset), else None: what exact accuracy counts."""
    marks = np.asarray(on_path).reshape(len(grid), len(grid[0])).astype(bool)
    path = decode_maze(grid, marks)
    if path is None or int(marks.sum()) != len(path) or not all(marks[r, c] for r, c in path):
        return None
    return path if maze.check_path(grid, path) is None else None


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

    def invert_cell(self, cell: tuple[int, int], shape: int | tuple[int, int]) -> tuple[int, int]:
        """Map a cell of the transformed grid back to the original grid of ``shape``
        (rows, cols), or side for a square one. Odd quarter turns swap rows and columns."""
        h, w = (shape, shape) if isinstance(shape, int) else shape
        idx = np.arange(h * w).reshape(h, w)
        t = np.rot90(idx, self.k)
        if self.flip:
            t = t[:, ::-1]
        orig = int(t[cell])
        return (orig // w, orig % w)


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
        # a side -> its per-size checkpoint; -F -> the frame checkpoint of frame F
        self.models: dict[int, tuple[TRM | HRM, dict[str, Any]]] = {}
        for size in served_sizes(self.skill, self.model_kind, self.checkpoint_dir, self.min_exact):
            path = checkpoint_path(self.skill, self.model_kind, size, self.checkpoint_dir)
            self.models[size] = load_checkpoint(path, device)
        for frame in served_frames(self.skill, self.model_kind, self.checkpoint_dir, self.min_exact):
            path = checkpoint_path(self.skill, self.model_kind, frame, self.checkpoint_dir, frame=True)
            self.models[-frame] = load_checkpoint(path, device)
        if not self.models:
            where = self.checkpoint_dir or CHECKPOINT_DIR
            bundled = available_sizes(self.skill, self.model_kind, self.checkpoint_dir)
            frames = available_frames(self.skill, self.model_kind, self.checkpoint_dir)
            why = (
                f"only checkpoints measured below {self.min_exact:.0%} exact (sizes {bundled}, frames {frames})"
                if bundled or frames
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
        """Per row: predicted classes, confidence and steps. A card with a "calibration"
        (workers.serving.calibration) halts a row once its calibrated confidence reaches the
        card's threshold and reports that confidence; a card without one, as the model says."""
        model, card = self.models[size]
        t = torch.from_numpy(tokens).to(self.device)
        cap = torch.tensor(caps, dtype=torch.long)
        name = f"{self.skill}-{self.model_kind}-{size if size > 0 else f'f{-size}'}"  # key -F: the frame model
        cal = Calibration.from_card(card, f"model card of {name}")
        if cal is None:
            res = run_recursive(model, t, cap, halt=True)
        else:
            apply = cal.apply

            def calibrate(h: torch.Tensor) -> torch.Tensor:
                return torch.from_numpy(apply(h.float().cpu().numpy())).float().to(h.device)

            res = run_recursive(model, t, cap, halt=True, calibrate=calibrate, halt_threshold=cal.threshold)
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
                grid = [[g if g else v for g, v in zip(grow, vrow, strict=True)] for grow, vrow in zip(seen, grid, strict=True)]  # keep givens
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
    """Routes a maze with a frame model (any grid that fits its frame) or, for a square
    ringed maze of a per-size checkpoint's side, with that checkpoint when its card measured
    more exact answers there than the frame model's card. Particles: the 8 symmetries of the
    grid (odd quarter turns swap rows and columns), answers mapped back."""

    skill = "maze.route"

    def setup(self, device: str = "cpu") -> None:
        super().setup(device)
        self.sides: dict[int, int] = {}  # model key -> the sub-frame side it reads (frame models)
        for key, (model, card) in list(self.models.items()):
            want = key * key if key < 0 else maze_seq_len(key)
            if card["config"]["seq_len"] != want:
                path = checkpoint_path(self.skill, self.model_kind, abs(key), self.checkpoint_dir, frame=key < 0)
                what = f"a {-key}x{-key} frame has {want}" if key < 0 else f"a {key}x{key} maze's interior has {want}"
                raise ConfigError(
                    f"checkpoint {path} sees {card['config']['seq_len']} cells but {what}; "
                    "re-train it with `tinyfleet train --skill maze.route`"
                )
            if key < 0 and isinstance(model, TRM):  # small grids run in a sub-frame, as in training
                frame = -key
                for side in frame_sides(frame, model.cfg.mixer):
                    sub_key = self._key(frame, side)
                    self.sides[sub_key] = side
                    if side != frame:
                        self.models[sub_key] = (sub_model(model, frame, side), card)

    @staticmethod
    def _key(frame: int, side: int) -> int:
        """The models key of a frame model's side x side sub-frame (-frame for the whole frame)."""
        return -frame if side == frame else -(frame * 1000 + side)

    def _pick(self, grid: Sequence[str]) -> tuple[int, list[str], int] | str:
        """(model key, the grid it reads, that grid's offset) or why no model reads ``grid``."""
        h, w = len(grid), len(grid[0])
        frames = sorted(-k for k in self.models if -1000 < k < 0)
        inner = crop_border(grid)
        if h == w and inner is not None and h in self.models:
            per_size = float((self.models[h][1].get("eval") or {}).get("exact", 1.0))
            framed = [frame_exact(self.models[-f][1], "perfect", h, w) for f in frames]
            if not frames or all(x is None or x < per_size for x in framed):
                return h, inner, 1
        for f in frames:
            view = frame_view(grid, f)
            if not isinstance(view, str):
                seen, off = view
                mixer = self.models[-f][0].cfg.mixer if isinstance(self.models[-f][0], TRM) else "mlp"
                return self._key(f, frame_side(len(seen), len(seen[0]), f, mixer)), seen, off
        if frames:
            reason = frame_view(grid, frames[-1])
            assert isinstance(reason, str)
            return reason
        return f"no {self.model_kind} checkpoint for {h}x{w} mazes" if inner is not None or h != w else "the maze has no wall border"

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        self._ensure()
        t0 = time.perf_counter()
        out: list[Attempt | None] = [None] * len(jobs)
        groups: dict[int, list[int]] = {}
        views: list[tuple[list[str], int, Dihedral]] = []
        for k, job in enumerate(jobs):
            assert isinstance(job.input, maze.MazeInput)
            tf = dihedral(job.particle)
            picked = self._pick(tf.apply(job.input.grid))
            if isinstance(picked, str):
                views.append(([], 0, tf))
                out[k] = self.attempt(None, 0.0, job=job, error=picked)
                continue
            key, seen, off = picked
            views.append((seen, off, tf))
            groups.setdefault(key, []).append(k)
        for key, idx in groups.items():
            _, card = self.models[key]
            seen_grids = [views[k][0] for k in idx]
            side = self.sides.get(key, 0)
            tokens = frame_tokens(seen_grids, side) if key < 0 else maze_tokens(seen_grids)
            pred, conf, steps = self._run(key, tokens, [self._cap(jobs[k], card) for k in idx])
            dt = (time.perf_counter() - t0) / len(jobs)
            for row, k in enumerate(idx):
                seen, off, tf = views[k]
                marks = frame_marks(pred[row], len(seen), len(seen[0]), side) if key < 0 else pred[row]
                path = decode_maze(seen, marks)
                if path is None:
                    out[k] = self.attempt(
                        None, 0.0, job=jobs[k], seconds=dt, recursion_steps=int(steps[row]),
                        error="predicted cells do not connect S to G",
                    )
                    continue
                grid = jobs[k].input.grid  # type: ignore[attr-defined]
                shape = (len(grid), len(grid[0]))
                back = [tf.invert_cell((r + off, c + off), shape) for r, c in path]  # un-crop, then un-transform
                out[k] = self.attempt(
                    maze.MazeOutput(path=back),
                    float(conf[row]),
                    job=jobs[k],
                    seconds=dt,
                    recursion_steps=int(steps[row]),
                    size=max(shape),
                    **({"frame": card["frame"], "sub_frame": side} if key < 0 else {}),
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
    """TRM on mazes: any grid up to its frame checkpoint's frame (and square ringed mazes of
    a per-size checkpoint's side); per-cell on-path labels decoded into a path; particles are
    the 8 grid symmetries mapped back."""

    name = "maze.trm"
    model_kind = "trm"


class HRMMazeWorker(_MazeWorker):
    """HRM on mazes, same interface as :class:`TRMMazeWorker` (bundled: a 7x7 checkpoint)."""

    name = "maze.hrm"
    model_kind = "hrm"
