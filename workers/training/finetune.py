"""Fine-tuning a served tiny recursive model on lessons, with replay, and the evaluations the
promotion gate compares.

The loop is the trainer's own deep supervision (:class:`workers.training.trainer.DeepSupervision`:
carried batch, one optimizer step per supervision step, halted rows replaced), twice over one
optimizer: one carried batch of lessons, one of fresh items of the kit's generator (the
checkpoint's own training distribution, so it does not forget). ``replay`` is the share of
optimizer steps taken on the fresh batch. (Not a share of rows in one batch: rows the model
gets wrong stay in a carried batch up to ``N_sup`` steps while easy rows halt after one or two,
so lessons would crowd the replay out of a mixed batch.) Lessons are augmented like the kit's items (sudoku: digit relabelling, band/row and
stack/column permutations, transposes: a unique solution stays the solution); maze lessons are
drawn as they are (a grid with several shortest paths keeps its teacher's one).

Evaluations (both on the same items for the candidate and the current model):

- :func:`lesson_exact`: exact share on held-out lessons, checked by the kit's own checker
  (a sudoku solution that holds, a shortest S -> G path), not by equality with the teacher;
- :func:`own_eval`: :func:`workers.training.evaluation.evaluate` on the checkpoint's own
  held-out ``eval`` split (the card's seed, ``n`` items).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tinyfleet_core.errors import InputError
from workers.models.hrm import HRM
from workers.models.trm import TRM, run_recursive
from workers.serving.neural import build_model, crop_border, maze_tokens, sudoku_tokens
from workers.training.data import SudokuData, task_data
from workers.training.evaluation import evaluate
from workers.training.lessons import Lesson
from workers.training.trainer import DeepSupervision, Recipe, default_recipe

__all__ = ["FinetuneResult", "finetune", "lesson_data", "lesson_exact", "lesson_items", "lesson_size", "own_eval"]

Model = TRM | HRM


def lesson_size(lesson: Lesson) -> int | None:
    """The checkpoint size a lesson's input needs (sudoku n, maze side), or None."""
    if lesson.skill == "sudoku.solve":
        return len(lesson.input.get("puzzle") or [])
    if lesson.skill == "maze.route":
        return len(lesson.input.get("grid") or [])
    return None


def lesson_items(skill: str, lessons: Sequence[Lesson]) -> list[Any]:
    """Lessons as the kit's items: sudoku (puzzle, solution) pairs, maze grids."""
    if skill == "sudoku.solve":
        return [(ls.input["puzzle"], ls.output["solution"]) for ls in lessons]
    if skill == "maze.route":
        return [list(ls.input["grid"]) for ls in lessons]
    raise InputError(f"no fine-tuning for skill {skill!r}; choose sudoku.solve or maze.route")


def _pool_arrays(skill: str, size: int, lessons: Sequence[Lesson]) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, labels) of the lessons in the kit pool's format: sudoku puzzle and solution
    tokens (1..n); maze interior tokens and 1 on the verified path's cells."""
    if skill == "sudoku.solve":
        return (sudoku_tokens([ls.input["puzzle"] for ls in lessons]).astype(np.int8),
                sudoku_tokens([ls.output["solution"] for ls in lessons]).astype(np.int8))
    inner = [crop_border(ls.input["grid"]) for ls in lessons]
    if any(g is None for g in inner):
        raise InputError("a maze lesson has no wall ring; per-size maze models read ringed mazes only")
    side = size - 2
    labels = np.zeros((len(lessons), side * side), dtype=np.int8)
    for k, ls in enumerate(lessons):
        for r, c in ls.output["path"]:
            labels[k, (r - 1) * side + (c - 1)] = 1
    return maze_tokens([g for g in inner if g is not None]).astype(np.int8), labels


class _LessonSudoku(SudokuData):
    def __init__(self, size: int, seed: int, arrays: tuple[np.ndarray, np.ndarray]) -> None:
        super().__init__(size, seed, pool=len(arrays[0]))
        self._arrays = arrays

    def pool(self, workers: int = 1, cache: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self._arrays


class _LessonRows:
    """Lesson rows drawn as they are (mazes: a grid with several shortest paths has one
    teacher's path; a transformed copy would be a shortest path but not the teacher's own
    choice on the transformed grid, so targets would disagree between copies)."""

    def __init__(self, arrays: tuple[np.ndarray, np.ndarray], seed: int) -> None:
        self._arrays = arrays
        self._gen = torch.Generator().manual_seed(seed)
        self._dev: tuple[torch.Tensor, torch.Tensor] | None = None

    def prepare(self, device: str = "cpu") -> None:
        self._dev = (torch.from_numpy(self._arrays[0]).long().to(device), torch.from_numpy(self._arrays[1]).long().to(device))

    def sample(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._dev is None:
            self.prepare()
        assert self._dev is not None
        idx = torch.randint(0, len(self._dev[0]), (k,), generator=self._gen).to(self._dev[0].device)
        return self._dev[0][idx], self._dev[1][idx]


def lesson_data(skill: str, size: int, lessons: Sequence[Lesson], seed: int) -> _LessonSudoku | _LessonRows:
    """The lessons as a training stream (``sample(k)``): sudoku augmented, mazes as they are."""
    arrays = _pool_arrays(skill, size, lessons)
    return _LessonSudoku(size, seed, arrays) if skill == "sudoku.solve" else _LessonRows(arrays, seed)


@dataclass(frozen=True)
class FinetuneResult:
    """The candidate's weights and what the run did."""

    weights: dict[str, torch.Tensor]
    steps: int
    seconds: float
    cpu_seconds: float
    replay: float
    lr: float


def finetune(
    model: Model, card: dict[str, Any], lessons: Sequence[Lesson], seconds: float, *,
    replay: float = 0.5, lr: float | None = None, seed: int = 0, batch: int | None = None, device: str = "cpu",
    pool: int = 2000,
) -> FinetuneResult:
    """Fine-tune a copy of ``model`` for ``seconds`` of wall time on ``lessons`` and fresh kit
    items: ``replay`` of the optimizer steps take a batch of fresh items, the others a batch of
    lessons (one optimizer, one lr schedule); ``model`` itself is not changed."""
    if seconds <= 0:
        raise InputError(f"fine-tuning time must be positive, got {seconds} s")
    if not 0.0 <= replay < 1.0:
        raise InputError(f"the replay ratio must be in [0, 1), got {replay}")
    skill, size = str(card["skill"]), int(card["size"])
    _, recipe = default_recipe(skill, str(card["config"].get("kind", "trm")), size, device)
    recipe = Recipe(**(vars(recipe) | {"lr": lr or recipe.lr * 0.5, "warmup": 20, "ema": 0.0, "batch": batch or min(recipe.batch, 128)}))
    taught = lesson_data(skill, size, lessons, seed)
    taught.prepare(device)
    fresh = task_data(skill, size, seed + 7919, pool)  # the kit's generator, a seed of its own
    fresh.prepare(device)
    cand = build_model(card).to(device)
    cand.load_state_dict(model.state_dict())
    cand.train()
    opt = torch.optim.AdamW(cand.parameters(), lr=recipe.lr, betas=(0.9, 0.95), weight_decay=recipe.weight_decay)
    parts = [DeepSupervision(cand, d, recipe, seed + k, device, opt=opt) for k, d in enumerate((taught, fresh))]  # type: ignore[arg-type]
    t0, c0 = time.perf_counter(), time.process_time()
    deadline = t0 + seconds
    steps = replayed = 0
    while time.perf_counter() < deadline:
        part = parts[1] if replayed < replay * (steps + 1) else parts[0]  # replay: this share of the steps
        replayed += part is parts[1]
        part.n, part.progress = steps, (time.perf_counter() - t0) / seconds  # one lr schedule for both
        part.step()
        steps += 1
    cand.eval()
    return FinetuneResult(
        {k: v.detach().clone() for k, v in cand.state_dict().items()}, steps,
        time.perf_counter() - t0, time.process_time() - c0, replay, recipe.lr,
    )


@torch.no_grad()
def lesson_exact(model: Model, skill: str, size: int, lessons: Sequence[Lesson], device: str = "cpu") -> float:
    """Share of ``lessons`` the model answers right (by the kit's checker), halting on its head."""
    if not lessons:
        return 0.0
    items = lesson_items(skill, lessons)
    data = task_data(skill, size, 0)
    ok: list[bool] = []
    for s in range(0, len(items), 256):
        chunk = items[s : s + 256]
        tokens = torch.from_numpy(data.encode(chunk)).to(device)
        res = run_recursive(model, tokens, model.cfg.N_sup, halt=True)
        ok += data.correct(chunk, res.pred.cpu().numpy())
    return float(np.mean(ok))


def own_eval(model: Model, card: dict[str, Any], n: int, device: str = "cpu") -> float:
    """Exact share on the checkpoint's own held-out eval split (its card's seed)."""
    data = task_data(str(card["skill"]), int(card["size"]), int(card.get("seed", 0)))
    return float(evaluate(model, data, n, int(card.get("seed", 0)), split="eval", device=device)["exact"])

