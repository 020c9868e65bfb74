"""Inference workers for the tiny recursive models (TRM, HRM). Their checkpoints live in
:mod:`workers.serving.neural_checkpoints` and the grid encodings shared with training in
:mod:`workers.serving.neural_encoding`; both are re-exported here.

A checkpoint is ``<skill>-<model>-<size>.safetensors`` plus a ``.json`` model card (config,
recipe, seed, steps, wall time, hardware, measured accuracy, date) in ``workers/checkpoints``.
Workers load every checkpoint of their skill and model in ``setup(device)`` and serve each
input with the checkpoint of its size; an input of a size without a checkpoint gets no answer
(``output=None``), so the step climbs to the next tier.
"""

from __future__ import annotations

import random
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from tinyfleet_core.errors import ConfigError
from tinyfleet_core.models import Attempt
from workers.base import Job, Worker
from workers.kits import maze, sudoku
from workers.models.hrm import HRM
from workers.models.trm import TRM, Inference, RecursiveModel, run_recursive
from workers.serving.calibration import Calibration
from workers.serving.learned import BUNDLED, PointerWatch, resolve
from workers.serving.neural_checkpoints import (
    CHECKPOINT_DIR,
    SERVE_MIN_EXACT,
    available_frames,
    available_sizes,
    build_model,
    checkpoint_path,
    frame_exact,
    has_checkpoint,
    load_checkpoint,
    maze_accepts,
    maze_decline,
    save_checkpoint,
    served_frames,
    served_sizes,
    set_torch_threads,
)
from workers.serving.neural_encoding import (
    MAZE_PAD,
    Dihedral,
    crop_border,
    decode_maze,
    dihedral,
    exact_path,
    frame_embed,
    frame_labels,
    frame_marks,
    frame_side,
    frame_sides,
    frame_state,
    frame_tokens,
    frame_view,
    maze_labels,
    maze_seq_len,
    maze_tokens,
    sub_model,
    sudoku_tokens,
)
from workers.serving.serving_tune import ServingProfile, chunk_spans

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
    "run_rows",
    "save_checkpoint",
    "served_sizes",
    "set_torch_threads",
    "sudoku_tokens",
]



# --------------------------------------------------------------------------------------- #
# the served forward pass (the workers and workers.training.tune_serving run this one)


def run_rows(model: RecursiveModel, tokens: torch.Tensor, caps: torch.Tensor, cal: Calibration | None) -> Inference:
    """One forward pass over a batch as the workers serve it: halting on, per-row step caps;
    a checkpoint with a calibration halts a row once its calibrated confidence reaches the
    card's threshold and reports that confidence, one without halts as the model says."""
    if cal is None:
        return run_recursive(model, tokens, caps, halt=True)
    apply = cal.apply

    def calibrate(h: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(apply(h.float().cpu().numpy())).float().to(h.device)

    return run_recursive(model, tokens, caps, halt=True, calibrate=calibrate, halt_threshold=cal.threshold)


# --------------------------------------------------------------------------------------- #
# workers


class _RecursiveWorker(Worker):
    """Loads every checkpoint of (skill, model) and dispatches each row to its size's model."""

    model_kind: ClassVar[str] = "trm"
    min_exact: ClassVar[float] = SERVE_MIN_EXACT
    stochastic = True
    checkpoint_dir: Path | None = None

    def __init__(self, learned_dir: str | Path | None = None, *, use_serving: bool = True) -> None:
        self.learned_dir = learned_dir  # None: workers.serving.learned.learned_dir() in this process
        self.use_serving = use_serving  # False: ignore cards' "serving" batch (one pass per group, as before)

    def setup(self, device: str = "cpu") -> None:
        if device.startswith("cuda") and not torch.cuda.is_available():
            warnings.warn(f"worker {self.name!r} was given {device!r} but torch sees no GPU; running on CPU", stacklevel=2)
            device = "cpu"
        super().setup(device)
        set_torch_threads()
        # a side -> its per-size checkpoint; -F -> the frame checkpoint of frame F
        self.models: dict[int, tuple[TRM | HRM, dict[str, Any]]] = {}
        self.versions: dict[int, str] = {}  # size -> the version served (workers.serving.learned)
        sizes = served_sizes(self.skill, self.model_kind, self.checkpoint_dir, self.min_exact)
        self._stems = {checkpoint_path(self.skill, self.model_kind, s, self.checkpoint_dir).stem: s for s in sizes}
        self._watch = PointerWatch(list(self._stems), getattr(self, "learned_dir", None))  # resolved once, here
        for size in sizes:
            path = checkpoint_path(self.skill, self.model_kind, size, self.checkpoint_dir)
            path, self.versions[size] = resolve(path, self._watch.directory)  # a promoted version, else the bundled file
            self.models[size] = load_checkpoint(path, device)
        for frame in served_frames(self.skill, self.model_kind, self.checkpoint_dir, self.min_exact):
            path = checkpoint_path(self.skill, self.model_kind, frame, self.checkpoint_dir, frame=True)
            self.models[-frame] = load_checkpoint(path, device)
        self.calibrations: dict[int, Calibration | None] = {}  # a bad block fails here, not at the first batch
        self.serving: dict[int, ServingProfile | None] = {}  # the card's measured best batch (serving_tune)
        for key, (_, card) in self.models.items():
            path = checkpoint_path(self.skill, self.model_kind, abs(key), self.checkpoint_dir, frame=key < 0)
            self.calibrations[key] = Calibration.from_card(card, f"model card of {path.stem}")
            self.serving[key] = ServingProfile.from_card(card, f"model card {path.with_suffix('.json')}")
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
        self._refresh()

    def _refresh(self) -> None:
        """Between batches: load the version a changed ``CURRENT`` pointer names. A version that
        fails to load is skipped with a warning (the pool keeps serving the one it has)."""
        for stem in self._watch.changed(time.monotonic()):
            size = self._stems[stem]
            path, version = resolve(checkpoint_path(self.skill, self.model_kind, size, self.checkpoint_dir), self._watch.directory)
            try:
                model, card = load_checkpoint(path, self.device)
                cal = Calibration.from_card(card, f"model card of {path.stem}")
                prof = ServingProfile.from_card(card, f"model card {path.with_suffix('.json')}")
            except ConfigError as e:
                warnings.warn(f"worker {self.name!r} keeps {stem}@{self.versions[size]}: {e}", stacklevel=2)
                continue
            self.models[size], self.calibrations[size], self.versions[size] = (model, card), cal, version
            self.serving[size] = prof

    def _version(self, key: int) -> str:
        """``<stem>@<version>`` of the checkpoint that answers for models key ``key``."""
        if key > 0:
            return f"{checkpoint_path(self.skill, self.model_kind, key, self.checkpoint_dir).stem}@{self.versions.get(key, BUNDLED)}"
        frame = -key if -key < 1000 else -key // 1000
        return f"{checkpoint_path(self.skill, self.model_kind, frame, self.checkpoint_dir, frame=True).stem}@{BUNDLED}"

    def _cap(self, job: Job, card: dict[str, Any]) -> int:
        default = int(card.get("infer_steps", card["config"]["N_sup"]))
        return max(1, min(default, job.max_depth)) if job.max_depth else default

    def _run(self, size: int, tokens: np.ndarray, caps: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per row: predicted classes, confidence and steps (:func:`run_rows`: halting on, and
        calibrated when the card has a "calibration"). A card with a "serving" profile
        (workers.serving.serving_tune) runs the rows in chunks of its measured best batch, so a
        pool handed 256 rows runs at that batch's items per CPU-second; without one, the rows
        run as one batch."""
        model, _ = self.models[size]
        t = torch.from_numpy(tokens).to(self.device)
        cap = torch.tensor(caps, dtype=torch.long)
        cal = self.calibrations.get(size)  # parsed and checked once, at setup
        prof = self.serving.get(size) if getattr(self, "use_serving", True) else None
        parts = [run_rows(model, t[a:b], cap[a:b], cal) for a, b in chunk_spans(len(t), prof.best_batch if prof else None)]
        pred, conf, steps = (torch.cat([getattr(r, f) for r in parts]).cpu().numpy() for f in ("pred", "confidence", "steps"))
        return pred, conf, steps


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
        prep = (time.perf_counter() - t0) / len(jobs)  # shared set-up, spread over every job
        for n, idx in groups.items():
            g0 = time.perf_counter()
            _, card = self.models[n]
            tokens = sudoku_tokens([views[k][0] for k in idx])
            pred, conf, steps = self._run(n, tokens, [self._cap(jobs[k], card) for k in idx])
            dt = prep + (time.perf_counter() - g0) / len(idx)  # each group pays its own forward passes
            served_by = self._version(n)  # once per group, not per row
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
                    checkpoint=served_by,
                )
        return [a for a in out if a is not None]


FRAME_MARGIN = 0.02
"""How much better (exact accuracy, on the cards) a frame model must have measured on a ringed
square maze than that size's own checkpoint before it takes those mazes from it."""


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
            if key < 0:  # a frame model reads the whole frame (an HRM, an MLP-mixer TRM) ...
                self.sides[key] = -key
            if key < 0 and isinstance(model, TRM):  # ... or, with attention or a grid conv, small grids in a sub-frame
                frame = -key
                for side in frame_sides(frame, model.cfg.mixer):
                    sub_key = self._key(frame, side)
                    self.sides[sub_key] = side
                    if side != frame:
                        self.models[sub_key] = (sub_model(model, frame, side), card)
                        self.calibrations[sub_key] = self.calibrations[key]
                        self.serving[sub_key] = self.serving[key]

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
            # the per-size checkpoint (the specialist, maybe a learned version of it) keeps its
            # own shape unless a frame model measured clearly better on it
            per_size = float((self.models[h][1].get("eval") or {}).get("exact", 1.0))
            framed = [frame_exact(self.models[-f][1], "perfect", h, w) for f in frames]
            if not frames or all(x is None or x < per_size + FRAME_MARGIN for x in framed):
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
            same = tf.k == 0 and not tf.flip  # particle 0: the grid as given (no numpy round trip per row)
            picked = self._pick(job.input.grid if same else tf.apply(job.input.grid))
            if isinstance(picked, str):
                views.append(([], 0, tf))
                out[k] = self.attempt(None, 0.0, job=job, error=picked)
                continue
            key, seen, off = picked
            views.append((seen, off, tf))
            groups.setdefault(key, []).append(k)
        prep = (time.perf_counter() - t0) / len(jobs)  # shared set-up, spread over every job
        for key, idx in groups.items():
            g0 = time.perf_counter()
            _, card = self.models[key]
            seen_grids = [views[k][0] for k in idx]
            side = self.sides.get(key, 0)
            tokens = frame_tokens(seen_grids, side) if key < 0 else maze_tokens(seen_grids)
            pred, conf, steps = self._run(key, tokens, [self._cap(jobs[k], card) for k in idx])
            dt = prep + (time.perf_counter() - g0) / len(idx)  # each group pays its own forward passes
            served_by = self._version(key)  # once per group, not per row
            for row, k in enumerate(idx):
                seen, off, tf = views[k]
                marks = frame_marks(pred[row], len(seen), len(seen[0]), side) if key < 0 else pred[row]
                path = decode_maze(seen, marks)
                if path is None:
                    out[k] = self.attempt(
                        None, 0.0, job=jobs[k], seconds=dt, recursion_steps=int(steps[row]),
                        error="predicted cells do not connect S to G", checkpoint=served_by,
                    )
                    continue
                grid = jobs[k].input.grid  # type: ignore[attr-defined]
                shape = (len(grid), len(grid[0]))
                if tf.k == 0 and not tf.flip:  # un-crop (the identity needs no un-transform)
                    back = [(r + off, c + off) for r, c in path]
                else:  # un-crop, then un-transform
                    back = [tf.invert_cell((r + off, c + off), shape) for r, c in path]
                out[k] = self.attempt(
                    maze.MazeOutput(path=back),
                    float(conf[row]),
                    job=jobs[k],
                    seconds=dt,
                    recursion_steps=int(steps[row]),
                    size=max(shape),
                    checkpoint=served_by,
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
