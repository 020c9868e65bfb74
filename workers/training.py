"""Training and evaluation of the tiny recursive models (TRM, HRM) on the task kits.

Data is generated on the fly by the kits (sudoku: a pre-generated pool of unique puzzles,
augmented by digit relabelling, row/column permutations and transposes; mazes: fresh perfect
mazes). Seeds are namespaced by split, so the training stream (``train:``), the periodic
held-out check (``valid:``) and ``tinyfleet eval`` (``eval:``) never share a puzzle seed.

Deep supervision with a carried batch: every row keeps its (detached) state between
optimizer steps; a row that halts (its head says so, or after ``N_sup`` steps) is replaced by
a fresh example, as in the TRM reference code.

Entry points for the CLI: :func:`train_command` and :func:`eval_command`.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

import numpy as np
import torch

from orchestrator.errors import ConfigError, InputError

from . import maze, sudoku
from .hrm import HRM, HRMConfig
from .neural import (
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
from .trm import EMA, TRM, RecursiveModel, TRMConfig, run_recursive

__all__ = [
    "DeepSupervision",
    "MazeData",
    "Recipe",
    "SudokuData",
    "TaskData",
    "default_recipe",
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

    def sample(self, k: int) -> tuple[np.ndarray, np.ndarray]: ...
    def items(self, n: int, split: str, seed: int) -> list[Any]: ...
    def encode(self, items: list[Any]) -> np.ndarray: ...
    def labels(self, items: list[Any]) -> np.ndarray: ...
    def correct(self, items: list[Any], pred: np.ndarray) -> list[bool]: ...


def _rng(split: str, skill: str, size: int, seed: int) -> random.Random:
    return random.Random(f"{split}:{skill}:{size}:{seed}")


class SudokuData:
    """n x n sudoku: tokens are cell values (0 blank), labels digit - 1."""

    skill = "sudoku.solve"

    def __init__(self, size: int, seed: int, pool: int = 0) -> None:
        if size not in sudoku.SIZES:
            raise InputError(f"sudoku size must be one of {sudoku.SIZES}, got {size}")
        self.size, self.seed = size, seed
        self.vocab, self.classes, self.seq_len = size + 1, size, size * size
        self._pool_n = pool or {4: 4000, 6: 20000, 9: 5000}[size]
        self._pool: tuple[np.ndarray, np.ndarray] | None = None
        self._rng = _rng("train", self.skill, size, seed)
        self._np = np.random.default_rng(abs(hash(("train", size, seed))) % (2**32))

    def _gen(self, n: int, rng: random.Random, givens: tuple[int, int]) -> list[tuple[list[list[int]], list[list[int]]]]:
        return [sudoku.generate(self.size, rng, rng.randint(*givens)) for _ in range(n)]

    def pool(self) -> tuple[np.ndarray, np.ndarray]:
        if self._pool is None:
            pairs = self._gen(self._pool_n, self._rng, SUDOKU_GIVENS[self.size])
            self._pool = (sudoku_tokens([p for p, _ in pairs]), sudoku_tokens([s for _, s in pairs]))
        return self._pool

    def sample(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        puzzles, sols = self.pool()
        idx = self._np.integers(0, len(puzzles), k)
        n = self.size
        xs, ys = np.empty((k, n * n), np.int64), np.empty((k, n * n), np.int64)
        for row, i in enumerate(idx):
            tf = sudoku.random_transform(n, self._rng)
            cells = (np.asarray(tf.rows)[:, None] * n + np.asarray(tf.cols)[None, :])  # (n, n) source cells
            if tf.transpose:
                cells = cells.T
            digits = np.asarray(tf.digits)
            xs[row] = digits[puzzles[i][cells.ravel()]]
            ys[row] = digits[sols[i][cells.ravel()]] - 1
        return xs, ys

    def items(self, n: int, split: str, seed: int) -> list[Any]:
        return self._gen(n, _rng(split, self.skill, self.size, seed), EVAL_GIVENS[self.size])

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


class MazeData:
    """size x size perfect mazes: tokens wall/open/S/G, labels 1 on the shortest path."""

    skill = "maze.route"

    def __init__(self, size: int, seed: int) -> None:
        if size < 5 or size % 2 == 0:
            raise InputError(f"maze size must be odd and at least 5 (perfect mazes need it), got {size}")
        self.size, self.seed = size, seed
        self.vocab, self.classes, self.seq_len = 4, 2, maze_seq_len(size)
        self._rng = _rng("train", self.skill, size, seed)

    @staticmethod
    def _inner(grid: list[str]) -> list[str]:
        inner = crop_border(grid)
        assert inner is not None, "kit mazes of odd size have a wall border"
        return inner

    def sample(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        grids = [self._inner(maze.generate(self.size, self._rng)) for _ in range(k)]
        return maze_tokens(grids), maze_labels(grids)

    def items(self, n: int, split: str, seed: int) -> list[Any]:
        rng = _rng(split, self.skill, self.size, seed)
        return [maze.generate(self.size, rng) for _ in range(n)]

    def encode(self, items: list[Any]) -> np.ndarray:
        return maze_tokens([self._inner(g) for g in items])

    def labels(self, items: list[Any]) -> np.ndarray:
        return maze_labels([self._inner(g) for g in items])

    def correct(self, items: list[Any], pred: np.ndarray) -> list[bool]:
        ok = []
        for grid, row in zip(items, pred, strict=True):
            path = decode_maze(self._inner(grid), row)
            full = [(r + 1, c + 1) for r, c in path] if path is not None else None
            ok.append(full is not None and maze.check_path(grid, full) is None)
        return ok


def task_data(skill: str, size: int, seed: int) -> SudokuData | MazeData:
    if skill == "sudoku.solve":
        return SudokuData(size, seed)
    if skill == "maze.route":
        return MazeData(size, seed)
    raise InputError(f"no trainable data for skill {skill!r}; choose one of {', '.join(SKILLS)}")


# --------------------------------------------------------------------------------------- #
# recipes


@dataclass
class Recipe:
    """Optimizer and schedule. The CPU recipe of DESIGN.md section 5."""

    batch: int = 256
    lr: float = 1e-3
    warmup: int = 150
    weight_decay: float = 0.1
    ema: float = 0.0  # 0 = off (short CPU runs: the EMA lags the raw weights)
    grad_clip: float = 1.0
    explore: float = 0.1  # share of rows given a random minimum halting depth
    eval_every_s: float = 90.0
    eval_n: int = 256


def default_recipe(skill: str, model: str, size: int) -> tuple[dict[str, Any], Recipe]:
    """(model config overrides, recipe) that worked on a 2-core CPU for this task."""
    if skill == "sudoku.solve":
        cfg: dict[str, Any] = {4: {"d": 64, "n": 3}, 6: {"d": 64, "n": 3}, 9: {"d": 96, "n": 3}}[size]
        cfg.update(N_sup=8, T=2, mixer="mlp")
        recipe = Recipe(batch=256 if size == 4 else 128)
    else:
        cfg = {"d": 64, "n": 3, "T": 2, "N_sup": 8, "mixer": "mlp" if size <= 15 else "attn"}
        recipe = Recipe(batch=128)
    if model == "hrm":
        n = cfg.pop("n")
        cfg.update(N=2, T=max(2, n // 2))
    return cfg, recipe


def _make_model(model: str, data: TaskData, overrides: dict[str, Any]) -> TRM | HRM:
    base = dict(vocab=data.vocab, classes=data.classes, seq_len=data.seq_len, **overrides)
    if model == "trm":
        return TRM(TRMConfig(**base))
    if model == "hrm":
        return HRM(HRMConfig(**base))
    raise InputError(f"model must be 'trm' or 'hrm', got {model!r}")


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


def _lr_at(step: int, recipe: Recipe) -> float:
    return recipe.lr * min(1.0, (step + 1) / recipe.warmup)


class DeepSupervision:
    """One optimizer step per supervision step over a carried batch: rows keep their
    detached state between steps; a row that halts (head says so after its minimum depth,
    or ``N_sup`` steps) is replaced by a fresh example with a fresh state."""

    def __init__(self, model: TRM | HRM, data: TaskData, recipe: Recipe, seed: int, device: str) -> None:
        self.model, self.data, self.recipe, self.device = model, data, recipe, device
        self.opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=(0.9, 0.95), weight_decay=recipe.weight_decay)
        self.ema = EMA(model, recipe.ema) if recipe.ema > 0 else None
        self.gen = torch.Generator().manual_seed(seed)
        B = recipe.batch
        self.xs, self.ys = (torch.from_numpy(a).to(device) for a in data.sample(B))  # (B, S) each
        self.state: tuple[torch.Tensor, ...] = model.init_state(B)
        self.steps = torch.zeros(B, dtype=torch.long, device=device)  # supervision steps done per row
        self.min_halt = torch.ones(B, dtype=torch.long, device=device)
        self.n = 0

    def weights(self) -> dict[str, torch.Tensor]:
        return self.ema.state_dict(self.model) if self.ema else dict(self.model.state_dict())

    def step(self) -> dict[str, float]:
        """One supervision step and one optimizer step; returns loss, token and exact accuracy."""
        model, recipe, N_sup = self.model, self.recipe, self.model.cfg.N_sup
        for g in self.opt.param_groups:
            g["lr"] = _lr_at(self.n, recipe)
        self.n += 1
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
        return {"loss": loss.item(), "tok": hit.float().mean().item(), "exact": hit.all(-1).float().mean().item()}

    def _replace(self, halted: torch.Tensor, state: tuple[torch.Tensor, ...]) -> None:
        k = int(halted.sum())
        self.state = state
        if not k:
            return
        nx, ny = (torch.from_numpy(a).to(self.device) for a in self.data.sample(k))
        self.xs, self.ys = self.xs.clone(), self.ys.clone()
        self.xs[halted], self.ys[halted] = nx, ny
        fresh = self.model.init_state(k)
        self.state = tuple(s.clone() for s in state)
        for s, f in zip(self.state, fresh, strict=True):
            s[halted] = f
        self.steps[halted] = 0
        explore = torch.rand(k, generator=self.gen) < self.recipe.explore
        mins = torch.randint(2, self.model.cfg.N_sup + 1, (k,), generator=self.gen)
        self.min_halt[halted] = torch.where(explore, mins, torch.ones_like(mins)).to(self.device)


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
) -> dict[str, Any]:
    """Train for ``minutes`` of wall time and write the checkpoint and its model card.
    Returns the model card."""
    if minutes <= 0:
        raise InputError(f"--minutes must be positive, got {minutes}")
    set_torch_threads()
    torch.manual_seed(seed)
    device = _device()
    data = task_data(skill, size, seed)
    cfg_over, default = default_recipe(skill, model_kind, size)
    cfg_over.update(overrides or {})
    recipe = recipe or default
    prior: dict[str, Any] = {}
    if resume:
        model, prior = load_checkpoint(resume, device)
        if prior.get("skill") != skill or prior["config"].get("kind") != model_kind:
            raise ConfigError(f"--resume {resume} holds a {prior.get('skill')} {prior['config'].get('kind')} model, not {skill} {model_kind}")
        model.train()
    else:
        model = _make_model(model_kind, data, cfg_over).to(device)
    cfg = model.cfg
    t_data = time.perf_counter()
    if isinstance(data, SudokuData):
        data.pool()
    print(f"[train] {skill} {model_kind} {size}: {sum(p.numel() for p in model.parameters())} params, "
          f"device {device}, data ready in {time.perf_counter() - t_data:.1f}s", file=log, flush=True)

    trainer = DeepSupervision(model, data, recipe, seed, device)
    step0 = int(prior.get("steps", 0))
    wall0 = float(prior.get("wall_s", 0.0))
    step = step0
    t0 = time.perf_counter()
    deadline = t0 + minutes * 60
    last_log = last_eval = t0
    run = {"loss": 0.0, "tok": 0.0, "exact": 0.0, "k": 0}
    history: list[dict[str, Any]] = list(prior.get("history", []))
    ckpt = checkpoint_path(skill, model_kind, size, out)
    while time.perf_counter() < deadline:
        m = trainer.step()
        step += 1
        for key in ("loss", "tok", "exact"):
            run[key] += m[key]
        run["k"] += 1
        now = time.perf_counter()
        if now - last_log >= 10 or now >= deadline:
            kk = max(run["k"], 1)
            print(f"[train] step {step} {now - t0:6.0f}s loss {run['loss'] / kk:.4f} "
                  f"token acc {run['tok'] / kk:.4f} exact acc {run['exact'] / kk:.4f}", file=log, flush=True)
            run = {"loss": 0.0, "tok": 0.0, "exact": 0.0, "k": 0}
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
        "recipe": vars(recipe) | {"data": "generated on the fly by the task kit, augmented", "split_seed": f"train:{skill}:{size}:{seed}"},
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
    card = train(args.skill, args.model, size, float(args.minutes), int(args.seed),
                 getattr(args, "out", None) or CHECKPOINT_DIR, getattr(args, "resume", None),
                 final_eval_n=int(getattr(args, "eval_n", None) or 500))
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
    p = argparse.ArgumentParser(prog="python -m workers.training")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("train", "eval"):
        s = sub.add_parser(name)
        s.add_argument("--skill", required=True)
        s.add_argument("--model", default="trm")
        s.add_argument("--size", type=int, default=0)
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--out", default=str(CHECKPOINT_DIR))
        if name == "train":
            s.add_argument("--minutes", type=float, default=5.0)
            s.add_argument("--resume", default=None)
        else:
            s.add_argument("--n", type=int, default=1000)
            s.add_argument("--json", action="store_true")
            s.add_argument("--no-halt", dest="halt", action="store_false")
    return p


def main(argv: list[str] | None = None) -> int:
    """``train ...`` / ``eval ...`` without the CLI (same arguments as ``tinyfleet``)."""
    ns = _parser().parse_args(argv)
    return train_command(ns) if ns.cmd == "train" else eval_command(ns)
