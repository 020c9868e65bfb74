"""Training of the tiny recursive models (TRM, HRM) on the task kits' data
(:mod:`workers.training.data`), and the ``train`` / ``eval`` commands.

Deep supervision with a carried batch: every row keeps its (detached) state between
optimizer steps; a row that halts (its head says so, or after ``N_sup`` steps) is replaced by
a fresh example, as in the TRM reference code.

Entry points for the CLI: :func:`train_command` and :func:`eval_command`. ``train`` writes to
``./checkpoints`` unless ``--out`` names a directory; the bundled ``workers/checkpoints``
changes only when ``--out`` names it.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TextIO

import torch

from tinyfleet_core.errors import ConfigError, InputError
from workers.kits import sudoku
from workers.models.hrm import HRM, HRMConfig
from workers.models.trm import EMA, IGNORE, TRM, TRMConfig
from workers.serving.neural import (
    checkpoint_path,
    frame_embed,
    frame_state,
    load_checkpoint,
    save_checkpoint,
    set_torch_threads,
)
from workers.training.args import USER_CHECKPOINT_DIR, add_eval_options, add_train_options
from workers.training.data import FrameMazeData, MazeData, SudokuData, TaskData, task_data
from workers.training.evaluation import check_args, default_device, eval_command, evaluate, frame_report, speed

__all__ = [
    "DeepSupervision",
    "FrameMazeData",
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


def default_recipe(skill: str, model: str, size: int, device: str = "cpu", frame: int = 0) -> tuple[dict[str, Any], Recipe]:
    """(model config overrides, recipe) that worked for this task on this kind of device;
    ``frame`` for one maze model of every grid up to frame x frame."""
    gpu = device == "cuda"
    cfg: dict[str, Any]
    if frame:
        # CPU probes (3-4 min each, 2026-12-02): batch 32 / lr 2e-3 beat batch 64 / lr 1e-3 and batch 16
        cfg = {"d": 128 if gpu else 64, "n": 2, "T": 2, "N_sup": 8, "mixer": "attn", "heads": 4}
        recipe = (Recipe(batch=256, warmup=300, min_lr=0.1, eval_n=512, amp=True, pool=150000)
                  if gpu else Recipe(batch=32, lr=2e-3, min_lr=0.1, pool=60000, eval_every_s=300, eval_n=200))
        if model == "hrm":
            n = int(cfg.pop("n"))
            cfg.update(N=2, T=max(2, n // 2))
        return cfg, recipe
    if skill == "sudoku.solve":
        sudoku.box_shape(size)  # an InputError for a size the kit has no puzzles of
        if gpu:
            cfg = {"d": {4: 64, 6: 96, 9: 128}[size], "n": 4 if size == 9 else 3}
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
        n = int(cfg.pop("n"))
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

# --------------------------------------------------------------------------------------- #
# training


@torch.no_grad()
def _grid_positions(model: TRM | HRM, frame: int, seed: int) -> None:
    """Start a frame model's learned positions as row + column embeddings (a 2-D prior: cells
    in one row or column start alike), still trained freely afterwards. The prefix keeps its own."""
    g = torch.Generator().manual_seed(seed)
    d = model.pos.shape[1]
    rows, cols = torch.randn(frame, d, generator=g) * 0.02, torch.randn(frame, d, generator=g) * 0.02
    grid = (rows[:, None, :] + cols[None, :, :]).reshape(frame * frame, d)  # (F*F, D)
    model.pos[-frame * frame :] = grid.to(model.pos.device)


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

    def __init__(
        self, model: TRM | HRM, data: TaskData, recipe: Recipe, seed: int, device: str, *,
        side: int | None = None, batch: int | None = None, opt: torch.optim.Optimizer | None = None,
    ) -> None:
        self.model, self.data, self.recipe, self.device = model, data, recipe, device
        self.opt = opt or torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=(0.9, 0.95), weight_decay=recipe.weight_decay)
        self.ema = EMA(model, recipe.ema) if recipe.ema > 0 else None
        self.amp = recipe.amp
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self.side = side  # a frame model's sub-frame side: rows are grids that fit side x side
        B = batch or recipe.batch
        self.xs, self.ys = self._sample(B)  # (B, S) each, on the device
        self.state: tuple[torch.Tensor, ...] = self._init(B)
        self.steps = torch.zeros(B, dtype=torch.long, device=device)  # supervision steps done per row
        self.min_halt = torch.ones(B, dtype=torch.long, device=device)
        self.n = 0  # optimizer steps taken
        self.progress = 0.0  # share of the run's wall time spent: drives the lr decay

    def _sample(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.side is None:
            return self.data.sample(k)
        assert isinstance(self.data, FrameMazeData)
        return self.data.sample_side(k, self.side)

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.side is None:
            return self.model.embed(tokens)
        assert isinstance(self.model, TRM) and isinstance(self.data, FrameMazeData)
        return frame_embed(self.model, tokens, self.data.frame, self.side)

    def _init(self, k: int) -> tuple[torch.Tensor, ...]:
        if self.side is None:
            return self.model.init_state(k)
        assert isinstance(self.model, TRM)
        return frame_state(self.model, k, self.side)

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
            x = self._embed(self.xs)  # (B, L, D), re-embedded: the embedding is trained too
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
            valid = self.ys != IGNORE  # (B, S): frame padding is no cell
            hit = (o.logits.argmax(-1) == self.ys) | ~valid  # (B, S)
            halted = (self.steps >= N_sup) | (model.should_halt(o) & (self.steps >= self.min_halt))
            self._replace(halted, o.state)
        tok = (hit & valid).sum() / valid.sum().clamp(min=1)
        return {"loss": loss.detach().float(), "tok": tok.float(), "exact": hit.all(-1).float().mean()}

    def _replace(self, halted: torch.Tensor, state: tuple[torch.Tensor, ...]) -> None:
        """Rows where ``halted`` (B,) start over on a fresh example, without a host sync."""
        B = halted.numel()
        nx, ny = self._sample(B)
        rows = halted[:, None]  # (B, 1)
        self.xs, self.ys = torch.where(rows, nx, self.xs), torch.where(rows, ny, self.ys)
        fresh = self._init(B)
        self.state = tuple(torch.where(rows[:, :, None], f, s.float()) for f, s in zip(fresh, state, strict=True))
        self.steps = torch.where(halted, 0, self.steps)
        explore = torch.rand(B, generator=self.gen, device=self.device) < self.recipe.explore
        mins = torch.randint(2, self.model.cfg.N_sup + 1, (B,), generator=self.gen, device=self.device)
        self.min_halt = torch.where(halted, torch.where(explore, mins, 1), self.min_halt)


class FrameSupervision:
    """Deep supervision for an attention frame model: one carried batch per sub-frame side
    (grids that fit side x side run there, the frame's positions), one shared optimizer, the
    sides taken in turn. A side's batch is ``recipe.batch * (frame / side) ** 2`` rows (at most
    4x), so every optimizer step costs about the same."""

    def __init__(self, model: TRM, data: FrameMazeData, recipe: Recipe, seed: int, device: str) -> None:
        opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=(0.9, 0.95), weight_decay=recipe.weight_decay)
        F, B = data.frame, recipe.batch
        share = data.side_share()
        self.parts = [
            DeepSupervision(model, data, recipe, seed + k, device, side=side, opt=opt,
                            batch=int(min(4 * B, B * (F / side) ** 2)))
            for k, side in enumerate(data.sides) if share.get(side, 0.0) > 0
        ]
        self.ema = self.parts[0].ema
        self.n, self.progress = 0, 0.0

    def weights(self) -> dict[str, torch.Tensor]:
        return self.parts[0].weights()

    def step(self) -> dict[str, torch.Tensor]:
        part = self.parts[self.n % len(self.parts)]
        part.n, part.progress = self.n, self.progress  # one lr schedule over all sides
        self.n += 1
        return part.step()


def train(
    skill: str,
    model_kind: str,
    size: int,
    minutes: float,
    seed: int = 0,
    out: Path | str = USER_CHECKPOINT_DIR,
    resume: Path | str | None = None,
    *,
    log: TextIO = sys.stderr,
    overrides: dict[str, Any] | None = None,
    recipe: Recipe | None = None,
    final_eval_n: int = 500,
    workers: int = 1,
    data_cache: Path | str | None = None,
    device: str | None = None,
    frame: int = 0,
    report_n: int = 0,
) -> dict[str, Any]:
    """Train for ``minutes`` of wall time and write the checkpoint and its model card.
    ``overrides`` sets model config or recipe fields by name; ``workers`` processes build the
    data pool (cached under ``data_cache`` when given). ``frame`` (maze.route) trains one
    model for every grid up to frame x frame on the family mixture; its card then holds exact
    accuracy per family and size on ``report_n`` held-out items each (0: none) and items/s
    at batch 1 and 256. Returns the model card."""
    if minutes <= 0:
        raise InputError(f"--minutes must be positive, got {minutes}")
    set_torch_threads()
    torch.manual_seed(seed)
    device = device or default_device()
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    cfg_over, default = default_recipe(skill, model_kind, size, device, frame)
    recipe = recipe or default
    recipe_fields = {f.name for f in fields(Recipe)}
    for key, value in (overrides or {}).items():
        if key in recipe_fields:
            setattr(recipe, key, type(getattr(recipe, key))(value))
        else:
            cfg_over[key] = value
    data = task_data(skill, size, seed, recipe.pool, frame=frame, mixer=str(cfg_over.get("mixer", "mlp")) if model_kind == "trm" else "mlp")
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
        if frame:
            _grid_positions(model, frame, seed)
    cfg = model.cfg
    print(f"[train] {skill} {model_kind} {size}: {sum(p.numel() for p in model.parameters())} params, "
          f"device {device}, data ready in {time.perf_counter() - t_data:.1f}s", file=log, flush=True)

    trainer: DeepSupervision | FrameSupervision
    if isinstance(data, FrameMazeData) and len(data.sides) > 1:
        assert isinstance(model, TRM)
        trainer = FrameSupervision(model, data, recipe, seed, device)
    else:
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
    ckpt = checkpoint_path(skill, model_kind, frame or size, out, frame=bool(frame))
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
            card = _card(skill, model_kind, size, seed, cfg, recipe, step, wall0 + now - t0, device, history, None, resume, data)
            save_checkpoint(ckpt, trainer.weights(), card)
            last_eval = time.perf_counter()
    wall = wall0 + time.perf_counter() - t0
    if trainer.ema:
        model.load_state_dict(trainer.ema.state_dict(model))
    model.eval()
    final = evaluate(model, data, final_eval_n, seed, split="valid", device=device)
    print(f"[eval] final held-out exact {final['exact']:.3f} mean steps {final['mean_steps']:.2f}", file=log, flush=True)
    card = _card(skill, model_kind, size, seed, cfg, recipe, step, wall, device, history, final, resume, data)
    save_checkpoint(ckpt, model.state_dict(), card)  # first: the trained weights are never lost to the report below
    if isinstance(data, FrameMazeData) and report_n > 0:
        card["takes"]["exact_by_family"] = frame_report(model, data.frame, seed, report_n, device=device, log=log)
        card["takes"]["items_per_s"] = speed(model, data, seed, device=device)
        print(f"[eval] items/s {card['takes']['items_per_s']}", file=log, flush=True)
        save_checkpoint(ckpt, model.state_dict(), card)
    print(f"[train] wrote {ckpt} ({ckpt.stat().st_size / 1e6:.2f} MB)", file=log, flush=True)
    return card


def _card(
    skill: str, model_kind: str, size: int, seed: int, cfg: TRMConfig | HRMConfig, recipe: Recipe,
    steps: int, wall: float, device: str, history: list[dict[str, Any]], final: dict[str, Any] | None,
    resume: Path | str | None, data: TaskData,
) -> dict[str, Any]:
    frame = isinstance(data, FrameMazeData)
    hw = torch.cuda.get_device_name(0) if device == "cuda" else f"{os.cpu_count()}-core {platform.machine()} CPU, {torch.get_num_threads()} torch thread(s)"
    return {
        "skill": skill,
        "model": model_kind,
        "size": size,
        "config": cfg.to_dict(),
        "recipe": vars(recipe) | {
            "data": "a pool generated by the task kit (chunk i seeded train:SKILL:SIZE:SEED:i), "
                    "augmented per sample by validity-preserving transforms" if not frame else
                    "a pool of the workers.kits.maze_families mixture (chunk i seeded train:maze.route:fFRAME-LO:SEED:i), "
                    "each grid under a random symmetry before its canonical path label is computed",
            "split_seed": f"train:{skill}:{data.tag if frame else size}:{seed}",  # type: ignore[attr-defined]
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
    } | ({"frame": data.frame, "takes": _takes(data)} if isinstance(data, FrameMazeData) else {})


def _takes(data: FrameMazeData) -> dict[str, Any]:
    """What a frame model reads, for its model card."""
    f = data.frame
    return {
        "frame": f,
        "grids": f"any grid of '#', '.', 'S', 'G' up to {f}x{f} (square or not, S and G anywhere), or up to "
                 f"{f + 2}x{f + 2} with a wall ring (the ring is cropped); placed at the frame's top-left, "
                 "the rest padded with a PAD token that the loss and the halting target ignore",
        "families_seen": "perfect 0.3 (a third of them the kit's square ringed mazes, sides up to frame + 2), "
                         "loops 0.2 (0.1-0.5 of inner walls knocked out), random 0.3 (wall density 0.1/0.2/0.3/0.4), "
                         "rooms 0.2 (recursive division, ring half of the time); every grid under a random symmetry",
        "sizes_seen": f"rows and cols independently {data.lo}..{f}",
        "label": "the canonical shortest path (workers.kits.maze.canonical_path: from S, the first of up, down, "
                 "left, right that is one move closer to G); exact = the marked cells are exactly one shortest path",
    }


# --------------------------------------------------------------------------------------- #
# CLI entry points


def train_command(args: argparse.Namespace) -> int:
    """``tinyfleet train``: returns the exit status. Writes to ``--out``, by default
    ``./checkpoints`` (never into the bundled ``workers/checkpoints`` unless ``--out`` names it)."""
    check_args(args)
    frame = int(getattr(args, "frame", None) or 0)
    if frame and args.skill != "maze.route":
        raise InputError(f"--frame is for maze.route (one model for every grid up to FxF); {args.skill} takes --size")
    size = frame or args.size or (6 if args.skill == "sudoku.solve" else 11)
    workers = int(getattr(args, "workers", None) or 1)
    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    out = Path(getattr(args, "out", None) or USER_CHECKPOINT_DIR)
    card = train(args.skill, args.model, size, float(args.minutes), int(args.seed), out, getattr(args, "resume", None),
                 final_eval_n=int(getattr(args, "eval_n", None) or 500),
                 overrides=split_overrides(getattr(args, "set", None)), workers=workers,
                 data_cache=getattr(args, "data_cache", None), frame=frame,
                 report_n=int(getattr(args, "report_n", 200)))
    print(json.dumps({"checkpoint": str(checkpoint_path(args.skill, args.model, size, out, frame=bool(frame))),
                      "steps": card["steps"], "wall_s": card["wall_s"], "eval": card["eval"]}))
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
        if name == "train":
            s.add_argument("--out", default=None)
            add_train_options(s)
        else:
            s.add_argument("--checkpoint", default=None)
            s.add_argument("--n", type=int, default=1000)
            s.add_argument("--json", action="store_true")
            s.add_argument("--no-halt", dest="halt", action="store_false")
            add_eval_options(s)
    return p


def main(argv: list[str] | None = None) -> int:
    """``train ...`` / ``eval ...`` without the CLI (same arguments as ``tinyfleet``)."""
    ns = _parser().parse_args(argv)
    return train_command(ns) if ns.cmd == "train" else eval_command(ns)


if __name__ == "__main__":
    sys.exit(main())
