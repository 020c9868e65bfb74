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
import json
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TextIO

import torch

from tinyfleet_core.errors import ConfigError, InputError
from workers.models.hrm import HRM
from workers.models.trm import TRM
from workers.serving.neural import (  # noqa: F401  (frame_embed, frame_state: importable from here as before)
    checkpoint_path,
    frame_embed,
    frame_state,
    load_checkpoint,
    save_checkpoint,
    set_torch_threads,
)
from workers.training.args import USER_CHECKPOINT_DIR, add_eval_options, add_train_options
from workers.training.cards import frame_takes, train_card
from workers.training.data import HARD_GIVENS, FrameMazeData, MazeData, SudokuData, TaskData, task_data
from workers.training.evaluation import (
    check_args,
    default_device,
    eval_command,
    evaluate,
    frame_report,
    hard_band_eval,
    speed,
)
from workers.training.recipes import Recipe, default_recipe, make_model, split_overrides
from workers.training.supervision import DeepSupervision, FrameSupervision, grid_positions, lr_at

__all__ = [
    "DeepSupervision",
    "FrameMazeData",
    "FrameSupervision",
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

# The names these had when they lived here (tests and other modules import them from here).
_make_model = make_model
_grid_positions = grid_positions
_lr_at = lr_at
_card = train_card
_takes = frame_takes


# --------------------------------------------------------------------------------------- #
# training


@dataclass
class _Run:
    """What one training run carries from its set-up to its last checkpoint."""

    skill: str
    model_kind: str
    size: int
    seed: int
    model: TRM | HRM
    data: TaskData
    recipe: Recipe
    device: str
    resume: Path | str | None
    ckpt: Path
    log: TextIO
    step: int = 0  # optimizer steps, those of a resumed checkpoint included
    wall0: float = 0.0  # wall seconds of a resumed checkpoint
    history: list[dict[str, Any]] = field(default_factory=list)

    def card(self, wall: float, final: dict[str, Any] | None) -> dict[str, Any]:
        return train_card(self.skill, self.model_kind, self.size, self.seed, self.model.cfg, self.recipe, self.step,
                          wall, self.device, self.history, final, self.resume, self.data)

    def say(self, line: str) -> None:
        print(line, file=self.log, flush=True)


def _recipe_for(
    skill: str, model_kind: str, size: int, device: str, frame: int, recipe: Recipe | None,
    overrides: dict[str, Any] | None,
) -> tuple[dict[str, Any], Recipe]:
    """(model config overrides, recipe): the default for this task and device, or ``recipe``,
    with ``overrides`` set on whichever of the two has the field."""
    cfg_over, default = default_recipe(skill, model_kind, size, device, frame)
    recipe = recipe or default
    recipe_fields = {f.name for f in fields(Recipe)}
    for key, value in (overrides or {}).items():
        if key in recipe_fields:
            setattr(recipe, key, type(getattr(recipe, key))(value))
        else:
            cfg_over[key] = value
    return cfg_over, recipe


def _start_model(
    skill: str, model_kind: str, data: TaskData, cfg_over: dict[str, Any], resume: Path | str | None, device: str,
    frame: int, seed: int,
) -> tuple[TRM | HRM, dict[str, Any]]:
    """(the model to train, the card of the checkpoint it resumes, empty for a fresh one)."""
    if resume:
        model, prior = load_checkpoint(resume, device)
        if prior.get("skill") != skill or prior["config"].get("kind") != model_kind:
            raise ConfigError(f"--resume {resume} holds a {prior.get('skill')} {prior['config'].get('kind')} model, not {skill} {model_kind}")
        model.train()
        return model, prior
    model = make_model(model_kind, data, cfg_over).to(device)
    if frame:
        grid_positions(model, frame, seed)
    return model, {}


def _trainer_for(run: _Run) -> DeepSupervision | FrameSupervision:
    if isinstance(run.data, FrameMazeData) and len(run.data.sides) > 1:
        assert isinstance(run.model, TRM)
        return FrameSupervision(run.model, run.data, run.recipe, run.seed, run.device)
    return DeepSupervision(run.model, run.data, run.recipe, run.seed, run.device)


def _held_out_check(run: _Run, trainer: DeepSupervision | FrameSupervision, elapsed: float) -> None:
    """The periodic held-out evaluation, written into the card with the current weights."""
    run.model.eval()
    r = evaluate(run.model, run.data, run.recipe.eval_n, run.seed, split="valid", device=run.device)
    run.model.train()
    run.history.append({"step": run.step, "s": round(elapsed), "exact": r["exact"], "mean_steps": r["mean_steps"]})
    run.say(f"[eval] step {run.step} held-out exact {r['exact']:.3f} mean steps {r['mean_steps']:.2f} "
            f"confident {r['confident_share']:.2f} @ {r['confident_exact']}")
    save_checkpoint(run.ckpt, trainer.weights(), run.card(run.wall0 + elapsed, None))


def _train_until(run: _Run, trainer: DeepSupervision | FrameSupervision, minutes: float) -> float:
    """Optimizer steps until ``minutes`` of wall time are spent, a progress line every 10 s and
    a held-out check every ``eval_every_s``; returns the run's wall seconds."""
    t0 = time.perf_counter()
    deadline = t0 + minutes * 60
    last_log = last_eval = t0
    zero = torch.zeros((), device=run.device)
    sums = {"loss": zero, "tok": zero, "exact": zero}
    k = 0
    while time.perf_counter() < deadline:
        trainer.progress = (time.perf_counter() - t0) / (deadline - t0)
        m = trainer.step()
        run.step += 1
        sums = {key: sums[key] + m[key] for key in sums}
        k += 1
        now = time.perf_counter()
        if now - last_log >= 10 or now >= deadline:
            run.say(f"[train] step {run.step} {now - t0:6.0f}s loss {float(sums['loss']) / k:.4f} "
                    f"token acc {float(sums['tok']) / k:.4f} exact acc {float(sums['exact']) / k:.4f} "
                    f"({k / (now - last_log):.1f} steps/s)")
            sums, k = {key: zero for key in sums}, 0
            last_log = now
        if now - last_eval >= run.recipe.eval_every_s and now < deadline:
            _held_out_check(run, trainer, now - t0)
            last_eval = time.perf_counter()
    return run.wall0 + time.perf_counter() - t0


def _finish(
    run: _Run, trainer: DeepSupervision | FrameSupervision, wall: float, final_eval_n: int, report_n: int
) -> dict[str, Any]:
    """The final weights (EMA where kept), their held-out evaluation, the checkpoint and card;
    a frame model's per-family report and speed after them. Returns the card."""
    model = run.model
    if trainer.ema:
        model.load_state_dict(trainer.ema.state_dict(model))
    model.eval()
    final = evaluate(model, run.data, final_eval_n, run.seed, split="valid", device=run.device)
    run.say(f"[eval] final held-out exact {final['exact']:.3f} mean steps {final['mean_steps']:.2f}")
    card = run.card(wall, final)
    save_checkpoint(run.ckpt, model.state_dict(), card)  # first: the trained weights are never lost to the report below
    if isinstance(run.data, FrameMazeData) and report_n > 0:
        card["takes"]["exact_by_family"] = frame_report(model, run.data.frame, run.seed, report_n, device=run.device, log=run.log)
        card["takes"]["items_per_s"] = speed(model, run.data, run.seed, device=run.device)
        run.say(f"[eval] items/s {card['takes']['items_per_s']}")
        save_checkpoint(run.ckpt, model.state_dict(), card)
    if isinstance(run.data, SudokuData) and run.data.size in HARD_GIVENS and report_n > 0:
        card["eval_hard"] = hard_band_eval(model, run.data.size, run.seed, report_n, device=run.device)
        run.say(f"[eval] hard band {card['eval_hard']['givens']} givens: exact {card['eval_hard']['exact']:.3f}")
        save_checkpoint(run.ckpt, model.state_dict(), card)
    run.say(f"[train] wrote {run.ckpt} ({run.ckpt.stat().st_size / 1e6:.2f} MB)")
    return card


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
    cfg_over, recipe = _recipe_for(skill, model_kind, size, device, frame, recipe, overrides)
    data = task_data(skill, size, seed, recipe.pool, frame=frame, mixer=str(cfg_over.get("mixer", "mlp")) if model_kind == "trm" else "mlp",
                     hard=recipe.hard)
    t_data = time.perf_counter()
    data.prepare(device, workers, Path(data_cache) if data_cache else None)  # before CUDA work: pool workers spawn
    model, prior = _start_model(skill, model_kind, data, cfg_over, resume, device, frame, seed)
    run = _Run(skill, model_kind, size, seed, model, data, recipe, device, resume,
               checkpoint_path(skill, model_kind, frame or size, out, frame=bool(frame)), log,
               step=int(prior.get("steps", 0)), wall0=float(prior.get("wall_s", 0.0)),
               history=list(prior.get("history", [])))
    run.say(f"[train] {skill} {model_kind} {size}: {sum(p.numel() for p in model.parameters())} params, "
            f"device {device}, data ready in {time.perf_counter() - t_data:.1f}s")
    trainer = _trainer_for(run)
    wall = _train_until(run, trainer, minutes)
    return _finish(run, trainer, wall, final_eval_n, report_n)


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
