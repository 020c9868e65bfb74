"""Training and evaluation of the tiny recursive models (TRM, HRM) on the task kits.

Data comes from the kits: a pool of generated items (unique-solution sudoku, perfect mazes),
built in seeded chunks over any number of processes and optionally cached on disk, then
augmented per sample on the training device (sudoku: digit relabelling, row/column
permutations within bands and stacks, transposes; mazes: the 8 symmetries of the square).
Seeds are namespaced by split, so the training pool (``train:``), the periodic held-out check
(``valid:``) and ``tinyfleet eval`` (``eval:``) never share a puzzle seed.

Deep supervision with a carried batch: every row keeps its (detached) state between
optimizer steps; a row that halts (its head says so, or after ``N_sup`` steps) is replaced by
a fresh example, as in the TRM reference code.

Entry points for the CLI: :func:`train_command` and :func:`eval_command`.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import multiprocessing
import os
import platform
import random
import sys
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol, TextIO

import numpy as np
import torch

from tinyfleet_core.errors import ConfigError, InputError
from workers.kits import maze, sudoku
from workers.models.hrm import HRM, HRMConfig
from workers.models.trm import EMA, TRM, RecursiveModel, TRMConfig, run_recursive
from workers.serving.neural import (
    CHECKPOINT_DIR,
    checkpoint_path,
    crop_border,
    decode_maze,
    load_checkpoint,
    maze_labels,
    maze_seq_len,
    maze_tokens,
    save_checkpoint,
    set_torch_threads,
    sudoku_tokens,
)
from workers.training.args import add_train_options

__all__ = [
    "DeepSupervision",
    "MazeData",
    "Recipe",
    "SudokuData",
    "TaskData",
    "default_recipe",
    "split_overrides",
    "eval_command",
    "evaluate",
    "task_data",
    "train",
    "train_command",
]

SKILLS = ("sudoku.solve", "maze.route")
SUDOKU_GIVENS = {4: (5, 8), 6: (12, 18), 9: (30, 40)}
EVAL_GIVENS = {4: (6, 6), 6: (14, 14), 9: (30, 40)}


# --------------------------------------------------------------------------------------- #
# data


class TaskData(Protocol):
    """A skill's data for the models: training stream, eval items, encodings and checks."""

    skill: str
    size: int
    vocab: int
    classes: int
    seq_len: int

    def prepare(self, device: str, workers: int = 1, cache: Path | None = None) -> None: ...
    def sample(self, k: int) -> tuple[torch.Tensor, torch.Tensor]: ...
    def items(self, n: int, split: str, seed: int) -> list[Any]: ...
    def encode(self, items: list[Any]) -> np.ndarray: ...
    def labels(self, items: list[Any]) -> np.ndarray: ...
    def correct(self, items: list[Any], pred: np.ndarray) -> list[bool]: ...


def _rng(split: str, skill: str, size: int, seed: int | str) -> random.Random:
    return random.Random(f"{split}:{skill}:{size}:{seed}")


def _stable_seed(*parts: object) -> int:
    """A seed from its parts that is the same in every process (``hash`` of a str is not)."""
    return zlib.crc32(":".join(map(str, parts)).encode())


POOL_CHUNK = 500  # items per generation chunk; chunk i is seeded by its index, so the pool is
# the same however many processes build it


def _sudoku_chunk(size: int, seed: int, chunk: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    rng = _rng("train", "sudoku.solve", size, f"{seed}:{chunk}")
    lo, hi = SUDOKU_GIVENS[size]
    pairs = [sudoku.generate(size, rng, rng.randint(lo, hi)) for _ in range(count)]
    return sudoku_tokens([p for p, _ in pairs]).astype(np.int8), sudoku_tokens([s for _, s in pairs]).astype(np.int8)


def _maze_chunk(size: int, seed: int, chunk: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    rng = _rng("train", "maze.route", size, f"{seed}:{chunk}")
    grids = [MazeData.inner(maze.generate(size, rng)) for _ in range(count)]
    return maze_tokens(grids).astype(np.int8), maze_labels(grids).astype(np.int8)


def _build_pool(fn: Any, size: int, seed: int, n: int, workers: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` items from ``fn`` in chunks of POOL_CHUNK, over ``workers`` processes."""
    jobs = [(size, seed, i, min(POOL_CHUNK, n - i * POOL_CHUNK)) for i in range((n + POOL_CHUNK - 1) // POOL_CHUNK)]
    if workers > 1 and len(jobs) > 1:
        ctx = multiprocessing.get_context("spawn")  # no fork after CUDA or Ray threads started
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx) as ex:
            parts = list(ex.map(fn, *zip(*jobs, strict=True)))
    else:
        parts = [fn(*job) for job in jobs]
    return np.concatenate([p for p, _ in parts]), np.concatenate([q for _, q in parts])


class _PooledData:
    """A pre-generated pool of (tokens, labels) held on the training device, sampled with
    random validity-preserving transforms. ``prepare`` builds it (or loads it from a cache
    directory: the pool is a pure function of skill, size, seed and count)."""

    skill: str
    size: int
    _chunk: Any

    def __init__(self, seed: int, pool: int) -> None:
        self.seed, self._pool_n = seed, pool
        self._pool: tuple[np.ndarray, np.ndarray] | None = None
        self._dev: tuple[torch.Tensor, torch.Tensor] | None = None
        self._gen: torch.Generator | None = None

    def pool(self, workers: int = 1, cache: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, labels) as int8 arrays, (P, S) each."""
        if self._pool is None:
            path = cache / f"{self.skill}-{self.size}-seed{self.seed}-n{self._pool_n}.npz" if cache else None
            if path is not None and path.exists():
                with np.load(path) as f:
                    self._pool = (f["tokens"], f["labels"])
            else:
                self._pool = _build_pool(type(self)._chunk, self.size, self.seed, self._pool_n, workers)
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    np.savez_compressed(path, tokens=self._pool[0], labels=self._pool[1])
        return self._pool

    def prepare(self, device: str = "cpu", workers: int = 1, cache: Path | None = None) -> None:
        tokens, labels = self.pool(workers, cache)
        self._dev = (torch.from_numpy(tokens).long().to(device), torch.from_numpy(labels).long().to(device))
        self._gen = torch.Generator(device=device).manual_seed(_stable_seed("train", self.skill, self.size, self.seed))

    def _rand(self, *shape: int) -> torch.Tensor:
        assert self._dev is not None and self._gen is not None
        return torch.rand(shape, generator=self._gen, device=self._dev[0].device)

    def _picked(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._dev is None:
            self.prepare()
        assert self._dev is not None
        tokens, labels = self._dev
        idx = (self._rand(k) * len(tokens)).long()  # (k,)
        return tokens[idx], labels[idx]  # (k, S) each


class SudokuData(_PooledData):
    """n x n sudoku: tokens are cell values (0 blank), labels digit - 1. The pool is augmented
    per sample by digit relabelling, band and row-in-band permutations, stack and
    column-in-stack permutations and (square boxes) transposes."""

    skill = "sudoku.solve"
    _chunk = staticmethod(_sudoku_chunk)

    def __init__(self, size: int, seed: int, pool: int = 0) -> None:
        if size not in sudoku.SIZES:
            raise InputError(f"sudoku size must be one of {sudoku.SIZES}, got {size}")
        self.size = size
        self.vocab, self.classes, self.seq_len = size + 1, size, size * size
        super().__init__(seed, pool or {4: 4000, 6: 20000, 9: 5000}[size])

    def _perm(self, k: int, groups: int, per: int) -> torch.Tensor:
        """(k, groups * per) indices: groups shuffled, members shuffled within each group."""
        order = self._rand(k, groups).argsort(1)  # (k, G)
        inner = self._rand(k, groups, per).argsort(2)  # (k, G, per)
        return (order[:, :, None] * per + inner).reshape(k, groups * per)

    def sample(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens, labels), (k, n*n) each, on the prepared device."""
        puzzles, sols = self._picked(k)  # (k, S): 0..n and 1..n
        n = self.size
        br, bc = sudoku.box_shape(n)
        digits = torch.cat([torch.zeros_like(puzzles[:, :1]), self._rand(k, n).argsort(1) + 1], 1)  # (k, n+1), 0 -> 0
        rows, cols = self._perm(k, n // br, br), self._perm(k, n // bc, bc)  # (k, n) source row / column
        cells = rows[:, :, None] * n + cols[:, None, :]  # (k, n, n) source cell of each target cell
        if br == bc:
            flip = (self._rand(k) < 0.5)[:, None, None]
            cells = torch.where(flip, cells.transpose(1, 2), cells)
        cells = cells.reshape(k, n * n)
        xs = digits.gather(1, puzzles.gather(1, cells))
        ys = digits.gather(1, sols.gather(1, cells)) - 1
        return xs, ys

    def items(self, n: int, split: str, seed: int) -> list[Any]:
        rng = _rng(split, self.skill, self.size, seed)
        return [sudoku.generate(self.size, rng, rng.randint(*EVAL_GIVENS[self.size])) for _ in range(n)]

    def encode(self, items: list[Any]) -> np.ndarray:
        return sudoku_tokens([p for p, _ in items])

    def labels(self, items: list[Any]) -> np.ndarray:
        return sudoku_tokens([s for _, s in items]) - 1

    def correct(self, items: list[Any], pred: np.ndarray) -> list[bool]:
        n = self.size
        ok = []
        for (puzzle, _), row in zip(items, pred, strict=True):
            grid = [[int(row[r * n + c]) + 1 for c in range(n)] for r in range(n)]
            grid = [[g if g else v for g, v in zip(prow, grow)] for prow, grow in zip(puzzle, grid)]
            ok.append(sudoku.check_solution(puzzle, grid) is None)
        return ok


class MazeData(_PooledData):
    """size x size perfect mazes: tokens wall/open/S/G, labels 1 on the shortest path. The
    pool is augmented per sample by the 8 symmetries of the square (a perfect maze stays one,
    and its shortest path maps onto the new one)."""

    skill = "maze.route"
    _chunk = staticmethod(_maze_chunk)

    def __init__(self, size: int, seed: int, pool: int = 0) -> None:
        if size < 5 or size % 2 == 0:
            raise InputError(f"maze size must be odd and at least 5 (perfect mazes need it), got {size}")
        self.size = size
        self.vocab, self.classes, self.seq_len = 4, 2, maze_seq_len(size)
        super().__init__(seed, pool or 20000)
        side = size - 2
        grid = torch.arange(side * side).view(side, side)
        maps = []
        for t in (False, True):
            g = grid.T if t else grid
            for r in range(4):
                maps.append(torch.rot90(g, r).reshape(-1))
        self._maps = torch.stack(maps)  # (8, S): source cell of each target cell

    @staticmethod
    def inner(grid: list[str]) -> list[str]:
        inner = crop_border(grid)
        assert inner is not None, "kit mazes of odd size have a wall border"
        return inner

    def sample(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens, labels), (k, (size-2)**2) each, on the prepared device."""
        tokens, labels = self._picked(k)
        if self._maps.device != tokens.device:
            self._maps = self._maps.to(tokens.device)
        maps = self._maps[(self._rand(k) * 8).long()]  # (k, S)
        return tokens.gather(1, maps), labels.gather(1, maps)

    def items(self, n: int, split: str, seed: int) -> list[Any]:
        rng = _rng(split, self.skill, self.size, seed)
        return [maze.generate(self.size, rng) for _ in range(n)]

    def encode(self, items: list[Any]) -> np.ndarray:
        return maze_tokens([self.inner(g) for g in items])

    def labels(self, items: list[Any]) -> np.ndarray:
        return maze_labels([self.inner(g) for g in items])

    def correct(self, items: list[Any], pred: np.ndarray) -> list[bool]:
        ok = []
        for grid, row in zip(items, pred, strict=True):
            path = decode_maze(self.inner(grid), row)
            full = [(r + 1, c + 1) for r, c in path] if path is not None else None
            ok.append(full is not None and maze.check_path(grid, full) is None)
        return ok


def task_data(skill: str, size: int, seed: int, pool: int = 0) -> SudokuData | MazeData:
    if skill == "sudoku.solve":
        return SudokuData(size, seed, pool)
    if skill == "maze.route":
        return MazeData(size, seed, pool)
    raise InputError(f"no trainable data for skill {skill!r}; choose one of {', '.join(SKILLS)}")


# --------------------------------------------------------------------------------------- #
# recipes


@dataclass
class Recipe:
    """Optimizer, schedule and data. The CPU recipe of DESIGN.md section 5; GPU runs take
    bigger batches, bigger pools, bf16 autocast and a cosine decay over the run."""

    batch: int = 256
    lr: float = 1e-3
    warmup: int = 150
    min_lr: float = 1.0  # share of lr reached at the deadline by cosine decay (1.0: constant)
    weight_decay: float = 0.1
    ema: float = 0.0  # 0 = off (short CPU runs: the EMA lags the raw weights)
    grad_clip: float = 1.0
    explore: float = 0.1  # share of rows given a random minimum halting depth
    eval_every_s: float = 90.0
    eval_n: int = 256
    pool: int = 0  # pre-generated training items before augmentation (0: the kit's default)
    amp: bool = False  # bf16 autocast for the forward pass (the GPU recipes turn it on)


def default_recipe(skill: str, model: str, size: int, device: str = "cpu") -> tuple[dict[str, Any], Recipe]:
    """(model config overrides, recipe) that worked for this task on this kind of device."""
    gpu = device == "cuda"
    if skill == "sudoku.solve":
        sudoku.box_shape(size)  # an InputError for a size the kit has no puzzles of
        if gpu:
            cfg: dict[str, Any] = {"d": {4: 64, 6: 96, 9: 128}[size], "n": 4 if size == 9 else 3}
            recipe = Recipe(batch=768, warmup=300, min_lr=0.1, eval_n=512, amp=True,
                            pool={4: 10000, 6: 40000, 9: 60000}[size])
        else:
            cfg = {"d": {4: 64, 6: 64, 9: 96}[size], "n": 3}
            recipe = Recipe(batch=256 if size == 4 else 128)
        cfg.update(N_sup=8, T=2, mixer="mlp")
    else:
        cfg = {"d": 128 if gpu else 64, "n": 3, "T": 2, "N_sup": 8, "mixer": "mlp" if size <= 15 else "attn"}
        recipe = (Recipe(batch=768, warmup=300, min_lr=0.1, eval_n=512, amp=True, pool=300000 if size <= 11 else 150000)
                  if gpu else Recipe(batch=128))
    if model == "hrm":
        n = cfg.pop("n")
        cfg.update(N=2, T=max(2, n // 2))
    return cfg, recipe


def split_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """``["d=192", "lr=5e-4"]`` -> {"d": 192, "lr": 0.0005}: values parsed as JSON where they
    parse, else kept as strings (``mixer=attn``)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set takes KEY=VALUE (a model config or recipe field), got {pair!r}")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def _make_model(model: str, data: TaskData, overrides: dict[str, Any]) -> TRM | HRM:
    if model not in ("trm", "hrm"):
        raise InputError(f"model must be 'trm' or 'hrm', got {model!r}")
    base = dict(vocab=data.vocab, classes=data.classes, seq_len=data.seq_len, **overrides)
    known = set((TRMConfig if model == "trm" else HRMConfig).__dataclass_fields__)
    if set(base) - known:
        raise InputError(f"unknown {model} setting(s) {sorted(set(base) - known)}; model fields are "
                         f"{sorted(known)}, recipe fields {sorted(f.name for f in fields(Recipe))}")
    return TRM(TRMConfig(**base)) if model == "trm" else HRM(HRMConfig(**base))


# --------------------------------------------------------------------------------------- #
# evaluation


@torch.no_grad()
def evaluate(
    model: RecursiveModel,
    data: TaskData,
    n: int,
    seed: int,
    *,
    split: str = "eval",
    halt: bool = True,
    max_steps: int | None = None,
    batch: int = 256,
    device: str = "cpu",
) -> dict[str, Any]:
    """Exact accuracy (by the skill's own checker), cell accuracy, accuracy and share of answers with
    confidence >= 0.9, mean supervision steps, items/s (model + decoding, generation excluded)."""
    items = data.items(n, split, seed)
    cap = max_steps or model.cfg.N_sup
    ok: list[bool] = []
    cells: list[float] = []
    confs: list[float] = []
    steps: list[int] = []
    t0 = time.perf_counter()
    for s in range(0, n, batch):
        chunk = items[s : s + batch]
        tokens = torch.from_numpy(data.encode(chunk)).to(device)
        res = run_recursive(model, tokens, cap, halt=halt)
        pred = res.pred.cpu().numpy()
        ok += data.correct(chunk, pred)
        cells += (pred == data.labels(chunk)).mean(1).tolist()
        confs += res.confidence.cpu().tolist()
        steps += res.steps.cpu().tolist()
    dt = time.perf_counter() - t0
    okv, cv = np.asarray(ok), np.asarray(confs)
    sure = cv >= 0.9
    return {
        "skill": data.skill,
        "size": data.size,
        "n": n,
        "seed": seed,
        "split": split,
        "halt": halt,
        "max_steps": cap,
        "exact": float(okv.mean()),
        "cell_acc": float(np.mean(cells)),
        "confident_share": float(sure.mean()),
        "confident_exact": float(okv[sure].mean()) if sure.any() else None,
        "mean_steps": float(np.mean(steps)),
        "items_per_s": n / dt if dt > 0 else None,
    }


# --------------------------------------------------------------------------------------- #
# training


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _lr_at(step: int, recipe: Recipe, frac: float) -> float:
    """Linear warm-up over ``recipe.warmup`` steps, then cosine from lr to lr * min_lr as
    ``frac`` (the share of the run's wall time spent) goes from 0 to 1."""
    warm = min(1.0, (step + 1) / recipe.warmup)
    cos = 0.5 * (1 + math.cos(math.pi * min(max(frac, 0.0), 1.0)))
    return recipe.lr * warm * (recipe.min_lr + (1 - recipe.min_lr) * cos)


class DeepSupervision:
    """One optimizer step per supervision step over a carried batch: rows keep their
    detached state between steps; a row that halts (head says so after its minimum depth,
    or ``N_sup`` steps) is replaced by a fresh example with a fresh state. Everything stays
    on the device: no host sync per step (metrics come back as tensors)."""

    def __init__(self, model: TRM | HRM, data: TaskData, recipe: Recipe, seed: int, device: str) -> None:
        self.model, self.data, self.recipe, self.device = model, data, recipe, device
        self.opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=(0.9, 0.95), weight_decay=recipe.weight_decay)
        self.ema = EMA(model, recipe.ema) if recipe.ema > 0 else None
        self.amp = recipe.amp
        self.gen = torch.Generator(device=device).manual_seed(seed)
        B = recipe.batch
        self.xs, self.ys = data.sample(B)  # (B, S) each, on the device
        self.state: tuple[torch.Tensor, ...] = model.init_state(B)
        self.steps = torch.zeros(B, dtype=torch.long, device=device)  # supervision steps done per row
        self.min_halt = torch.ones(B, dtype=torch.long, device=device)
        self.n = 0  # optimizer steps taken
        self.progress = 0.0  # share of the run's wall time spent: drives the lr decay

    def weights(self) -> dict[str, torch.Tensor]:
        return self.ema.state_dict(self.model) if self.ema else dict(self.model.state_dict())

    def set_lr(self, lr: float) -> None:
        for g in self.opt.param_groups:
            g["lr"] = lr

    def step(self) -> dict[str, torch.Tensor]:
        """One supervision step and one optimizer step; returns loss, token and exact
        accuracy as 0-d tensors (read them with ``float``)."""
        model, recipe, N_sup = self.model, self.recipe, self.model.cfg.N_sup
        self.set_lr(_lr_at(self.n, recipe, self.progress))
        self.n += 1
        with torch.autocast(device_type=torch.device(self.device).type, dtype=torch.bfloat16, enabled=self.amp):
            x = model.embed(self.xs)  # (B, L, D), re-embedded: the embedding is trained too
            o = model.step(x, self.state)
            self.steps += 1
            loss, _ = model.loss(o, self.ys, x, self.steps)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        self.opt.step()
        if self.ema:
            self.ema.update(model)
        with torch.no_grad():
            hit = o.logits.argmax(-1) == self.ys  # (B, S)
            halted = (self.steps >= N_sup) | (model.should_halt(o) & (self.steps >= self.min_halt))
            self._replace(halted, o.state)
        return {"loss": loss.detach().float(), "tok": hit.float().mean(), "exact": hit.all(-1).float().mean()}

    def _replace(self, halted: torch.Tensor, state: tuple[torch.Tensor, ...]) -> None:
        """Rows where ``halted`` (B,) start over on a fresh example, without a host sync."""
        B = halted.numel()
        nx, ny = self.data.sample(B)
        rows = halted[:, None]  # (B, 1)
        self.xs, self.ys = torch.where(rows, nx, self.xs), torch.where(rows, ny, self.ys)
        fresh = self.model.init_state(B)
        self.state = tuple(torch.where(rows[:, :, None], f, s.float()) for f, s in zip(fresh, state, strict=True))
        self.steps = torch.where(halted, 0, self.steps)
        explore = torch.rand(B, generator=self.gen, device=self.device) < self.recipe.explore
        mins = torch.randint(2, self.model.cfg.N_sup + 1, (B,), generator=self.gen, device=self.device)
        self.min_halt = torch.where(halted, torch.where(explore, mins, 1), self.min_halt)


def train(
    skill: str,
    model_kind: str,
    size: int,
    minutes: float,
    seed: int = 0,
    out: Path | str = CHECKPOINT_DIR,
    resume: Path | str | None = None,
    *,
    log: TextIO = sys.stderr,
    overrides: dict[str, Any] | None = None,
    recipe: Recipe | None = None,
    final_eval_n: int = 500,
    workers: int = 1,
    data_cache: Path | str | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Train for ``minutes`` of wall time and write the checkpoint and its model card.
    ``overrides`` sets model config or recipe fields by name; ``workers`` processes build the
    data pool (cached under ``data_cache`` when given). Returns the model card."""
    if minutes <= 0:
        raise InputError(f"--minutes must be positive, got {minutes}")
    set_torch_threads()
    torch.manual_seed(seed)
    device = device or _device()
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    cfg_over, default = default_recipe(skill, model_kind, size, device)
    recipe = recipe or default
    recipe_fields = {f.name for f in fields(Recipe)}
    for key, value in (overrides or {}).items():
        if key in recipe_fields:
            setattr(recipe, key, type(getattr(recipe, key))(value))
        else:
            cfg_over[key] = value
    data = task_data(skill, size, seed, recipe.pool)
    t_data = time.perf_counter()
    data.prepare(device, workers, Path(data_cache) if data_cache else None)  # before CUDA work: pool workers spawn
    prior: dict[str, Any] = {}
    if resume:
        model, prior = load_checkpoint(resume, device)
        if prior.get("skill") != skill or prior["config"].get("kind") != model_kind:
            raise ConfigError(f"--resume {resume} holds a {prior.get('skill')} {prior['config'].get('kind')} model, not {skill} {model_kind}")
        model.train()
    else:
        model = _make_model(model_kind, data, cfg_over).to(device)
    cfg = model.cfg
    print(f"[train] {skill} {model_kind} {size}: {sum(p.numel() for p in model.parameters())} params, "
          f"device {device}, data ready in {time.perf_counter() - t_data:.1f}s", file=log, flush=True)

    trainer = DeepSupervision(model, data, recipe, seed, device)
    step0 = int(prior.get("steps", 0))
    wall0 = float(prior.get("wall_s", 0.0))
    step = step0
    t0 = time.perf_counter()
    deadline = t0 + minutes * 60
    last_log = last_eval = t0
    zero = torch.zeros((), device=device)
    run = {"loss": zero, "tok": zero, "exact": zero}
    k = 0
    history: list[dict[str, Any]] = list(prior.get("history", []))
    ckpt = checkpoint_path(skill, model_kind, size, out)
    while time.perf_counter() < deadline:
        trainer.progress = (time.perf_counter() - t0) / (deadline - t0)
        m = trainer.step()
        step += 1
        run = {key: run[key] + m[key] for key in run}
        k += 1
        now = time.perf_counter()
        if now - last_log >= 10 or now >= deadline:
            print(f"[train] step {step} {now - t0:6.0f}s loss {float(run['loss']) / k:.4f} "
                  f"token acc {float(run['tok']) / k:.4f} exact acc {float(run['exact']) / k:.4f} "
                  f"({k / (now - last_log):.1f} steps/s)", file=log, flush=True)
            run, k = {key: zero for key in run}, 0
            last_log = now
        if now - last_eval >= recipe.eval_every_s and now < deadline:
            model.eval()
            r = evaluate(model, data, recipe.eval_n, seed, split="valid", device=device)
            model.train()
            history.append({"step": step, "s": round(now - t0), "exact": r["exact"], "mean_steps": r["mean_steps"]})
            print(f"[eval] step {step} held-out exact {r['exact']:.3f} mean steps {r['mean_steps']:.2f} "
                  f"confident {r['confident_share']:.2f} @ {r['confident_exact']}", file=log, flush=True)
            card = _card(skill, model_kind, size, seed, cfg, recipe, step, wall0 + now - t0, device, history, None, resume)
            save_checkpoint(ckpt, trainer.weights(), card)
            last_eval = time.perf_counter()
    wall = wall0 + time.perf_counter() - t0
    if trainer.ema:
        model.load_state_dict(trainer.ema.state_dict(model))
    model.eval()
    final = evaluate(model, data, final_eval_n, seed, split="valid", device=device)
    print(f"[eval] final held-out exact {final['exact']:.3f} mean steps {final['mean_steps']:.2f}", file=log, flush=True)
    card = _card(skill, model_kind, size, seed, cfg, recipe, step, wall, device, history, final, resume)
    save_checkpoint(ckpt, model.state_dict(), card)
    print(f"[train] wrote {ckpt} ({ckpt.stat().st_size / 1e6:.2f} MB)", file=log, flush=True)
    return card


def _card(
    skill: str, model_kind: str, size: int, seed: int, cfg: TRMConfig | HRMConfig, recipe: Recipe,
    steps: int, wall: float, device: str, history: list[dict[str, Any]], final: dict[str, Any] | None,
    resume: Path | str | None,
) -> dict[str, Any]:
    hw = torch.cuda.get_device_name(0) if device == "cuda" else f"{os.cpu_count()}-core {platform.machine()} CPU, {torch.get_num_threads()} torch thread(s)"
    return {
        "skill": skill,
        "model": model_kind,
        "size": size,
        "config": cfg.to_dict(),
        "recipe": vars(recipe) | {
            "data": "a pool generated by the task kit (chunk i seeded train:SKILL:SIZE:SEED:i), "
                    "augmented per sample by validity-preserving transforms",
            "split_seed": f"train:{skill}:{size}:{seed}",
        },
        "seed": seed,
        "steps": steps,
        "wall_s": round(wall, 1),
        "hardware": hw,
        "device": device,
        "history": history,
        "eval": final,
        "resumed_from": str(resume) if resume else None,
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "torch": torch.__version__,
    }


# --------------------------------------------------------------------------------------- #
# CLI entry points


def _check_args(args: argparse.Namespace) -> None:
    if args.skill not in SKILLS:
        raise InputError(f"--skill must be one of {', '.join(SKILLS)} for tiny models, got {args.skill!r}")
    if args.model not in ("trm", "hrm"):
        raise InputError(f"--model must be 'trm' or 'hrm' here, got {args.model!r}")


def train_command(args: argparse.Namespace) -> int:
    """``tinyfleet train``: returns the exit status."""
    _check_args(args)
    size = args.size or (6 if args.skill == "sudoku.solve" else 11)
    workers = int(getattr(args, "workers", None) or 1)
    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    card = train(args.skill, args.model, size, float(args.minutes), int(args.seed),
                 getattr(args, "out", None) or CHECKPOINT_DIR, getattr(args, "resume", None),
                 final_eval_n=int(getattr(args, "eval_n", None) or 500),
                 overrides=split_overrides(getattr(args, "set", None)), workers=workers,
                 data_cache=getattr(args, "data_cache", None))
    print(json.dumps({"checkpoint": str(checkpoint_path(args.skill, args.model, size, getattr(args, "out", None) or CHECKPOINT_DIR)),
                      "steps": card["steps"], "wall_s": card["wall_s"], "eval": card["eval"]}))
    return 0


def eval_command(args: argparse.Namespace) -> int:
    """``tinyfleet eval``: exact accuracy, calibration, mean steps, items/s; ``--json``.
    ``--checkpoint PATH`` evaluates that file instead of the bundled one (its card gives the size)."""
    args.model = args.model or "trm"
    _check_args(args)
    set_torch_threads()
    device = _device()
    given = getattr(args, "checkpoint", None)
    if given:
        path = Path(given)
        model, card = load_checkpoint(path, device)
        if card.get("skill") != args.skill:
            raise InputError(f"--checkpoint {path} holds a {card.get('skill')} model, not {args.skill}")
        size = int(card["size"])
    else:
        size = args.size or (6 if args.skill == "sudoku.solve" else 11)
        path = checkpoint_path(args.skill, args.model, size, getattr(args, "out", None) or CHECKPOINT_DIR)
        model, card = load_checkpoint(path, device)
    data = task_data(args.skill, size, int(args.seed))
    r = evaluate(model, data, int(args.n), int(args.seed), halt=bool(getattr(args, "halt", True)), device=device)
    r["model"] = args.model
    r["checkpoint"] = path.name
    r["train_wall_s"] = card.get("wall_s")
    if getattr(args, "json", False):
        print(json.dumps(r))
    else:
        ce = "n/a" if r["confident_exact"] is None else f"{100 * r['confident_exact']:.1f}%"
        print(f"{args.skill} {args.model} {size}x{size}: exact {100 * r['exact']:.1f}% on {r['n']} (seed {r['seed']}); "
              f"confidence>=0.9: {100 * r['confident_share']:.1f}% of answers, {ce} correct; "
              f"mean steps {r['mean_steps']:.2f} of {r['max_steps']}{' (halting)' if r['halt'] else ''}; "
              f"{r['items_per_s']:.0f} items/s")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m workers.training.trainer")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("train", "eval"):
        s = sub.add_parser(name)
        s.add_argument("--skill", required=True)
        s.add_argument("--model", default="trm")
        s.add_argument("--size", type=int, default=0)
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--out", default=str(CHECKPOINT_DIR))
        if name == "train":
            add_train_options(s)
        else:
            s.add_argument("--checkpoint", default=None)
            s.add_argument("--n", type=int, default=1000)
            s.add_argument("--json", action="store_true")
            s.add_argument("--no-halt", dest="halt", action="store_false")
    return p


def main(argv: list[str] | None = None) -> int:
    """``train ...`` / ``eval ...`` without the CLI (same arguments as ``tinyfleet``)."""
    ns = _parser().parse_args(argv)
    return train_command(ns) if ns.cmd == "train" else eval_command(ns)


if __name__ == "__main__":
    sys.exit(main())
