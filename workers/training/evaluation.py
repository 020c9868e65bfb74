"""Held-out evaluation of a tiny recursive model on a task's data: exact accuracy by the
skill's own checker, cell accuracy, calibration of the confidence, halting depth, items/s."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from tinyfleet_core.errors import ConfigError, InputError
from workers.models.trm import IGNORE, RecursiveModel, run_recursive
from workers.serving.calibration import Calibration
from workers.serving.neural import available_frames, checkpoint_path, load_checkpoint, set_torch_threads, sub_model
from workers.training.data import HARD_GIVENS, SKILLS, FrameMazeData, SudokuData, TaskData, task_data

__all__ = ["FRAME_REPORT", "check_args", "default_device", "eval_command", "evaluate", "frame_report", "hard_band_eval", "speed"]


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
    calibration: Calibration | None = None,
) -> dict[str, Any]:
    """Exact accuracy (by the skill's own checker), cell accuracy, accuracy and share of answers with
    confidence >= 0.9, mean supervision steps, items/s (model + decoding, generation excluded).
    With ``calibration`` (a card's block) rows halt and report confidence as the workers serve
    them; without, on the model's own head."""
    items = data.items(n, split, seed)
    cap = max_steps or model.cfg.N_sup
    ok: list[bool] = []
    cells: list[float] = []
    confs: list[float] = []
    steps: list[int] = []
    t0 = time.perf_counter()
    runs: list[tuple[list[Any], Any, dict[str, int]]] = []  # (items, model, side)
    if isinstance(data, FrameMazeData):  # each grid in its sub-frame, as the worker runs it
        for side, idx in sorted(data.groups(items).items()):
            sub = sub_model(model, data.frame, side)  # type: ignore[arg-type]
            runs += [([items[k] for k in idx[s : s + batch]], sub, {"side": side}) for s in range(0, len(idx), batch)]
    else:
        runs = [(items[s : s + batch], model, {}) for s in range(0, n, batch)]
    for chunk, m, kw in runs:
        tokens = torch.from_numpy(data.encode(chunk, **kw)).to(device)
        if calibration is None:
            res = run_recursive(m, tokens, cap, halt=halt)
        else:
            res = run_recursive(m, tokens, cap, halt=halt, halt_threshold=calibration.threshold,
                                calibrate=lambda h: torch.from_numpy(calibration.apply(h.cpu().numpy())).to(h.device))
        pred = res.pred.cpu().numpy()
        ok += data.correct(chunk, pred, **kw)
        lab = data.labels(chunk, **kw)
        keep = lab != IGNORE  # frame padding is not a cell
        cells += ((pred == lab) & keep).sum(1).__truediv__(keep.sum(1).clip(min=1)).tolist()
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
        "halting": "calibrated" if calibration is not None else "native",
        "max_steps": cap,
        "exact": float(okv.mean()),
        "cell_acc": float(np.mean(cells)),
        "confident_share": float(sure.mean()),
        "confident_exact": float(okv[sure].mean()) if sure.any() else None,
        "mean_steps": float(np.mean(steps)),
        "items_per_s": n / dt if dt > 0 else None,
    }




def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


FRAME_REPORT: tuple[tuple[str, int, int], ...] = (
    ("perfect", 7, 7), ("perfect", 11, 11), ("perfect", 15, 15), ("perfect", 17, 17),
    ("random", 5, 5), ("random", 6, 8), ("random", 12, 9), ("random", 12, 12), ("random", 15, 15),
    ("loops", 11, 11), ("loops", 9, 14), ("rooms", 10, 10), ("rooms", 8, 13), ("rooms", 15, 15),
    ("perfect", 21, 21), ("perfect", 31, 31), ("random", 20, 30), ("random", 30, 30), ("loops", 25, 25), ("rooms", 30, 30),
)
"""(family, rows, cols) held out for a frame model's card (perfect N x N odd: the kit's ringed
maze, its ring cropped); shapes larger than the frame are skipped."""


def frame_report(
    model: RecursiveModel, frame: int, seed: int, n: int, *, device: str = "cpu", log: TextIO | None = None,
    calibration: Calibration | None = None,
) -> list[dict[str, Any]]:
    """Exact accuracy per family and shape of FRAME_REPORT that fits, halting on the head (or,
    with the card's ``calibration``, as the workers serve it)."""
    rows = []
    for family, h, w in FRAME_REPORT:
        ringed = family == "perfect" and h == w and h % 2 == 1
        if max(h, w) - (2 if ringed else 0) > frame:
            continue
        data = FrameMazeData(frame, seed, family=family, rows=h, cols=w)
        r = evaluate(model, data, n, seed, split="eval", device=device, calibration=calibration)
        rows.append({"family": family, "rows": h, "cols": w, "n": n, "exact": round(r["exact"], 4),
                     "cell_acc": round(r["cell_acc"], 4), "mean_steps": round(r["mean_steps"], 2)})
        if log is not None:
            print(f"[eval] {family} {h}x{w}: exact {r['exact']:.3f} ({n} held-out, seed {seed})", file=log, flush=True)
    return rows


def hard_band_eval(
    model: RecursiveModel, size: int, seed: int, n: int, *, device: str = "cpu", calibration: Calibration | None = None,
) -> dict[str, Any]:
    """Exact accuracy on ``n`` held-out puzzles of the size's hard band (HARD_GIVENS), halting
    on the head (and, given the card's ``calibration``, as served) and at the cap, for the card."""
    lo, hi = HARD_GIVENS[size]
    data = SudokuData(size, seed, givens=(lo, hi))
    halted = evaluate(model, data, n, seed, split="eval", device=device)
    capped = evaluate(model, data, n, seed, split="eval", halt=False, device=device)
    out = {"givens": f"{lo}-{hi}", "n": n, "seed": seed, "exact": round(halted["exact"], 4),
           "exact_at_cap": round(capped["exact"], 4), "mean_steps": round(halted["mean_steps"], 2),
           "cell_acc": round(halted["cell_acc"], 4)}
    if calibration is not None:
        served = evaluate(model, data, n, seed, split="eval", device=device, calibration=calibration)
        out |= {"exact_calibrated": round(served["exact"], 4), "mean_steps_calibrated": round(served["mean_steps"], 2)}
    return out


@torch.no_grad()
def speed(model: RecursiveModel, data: TaskData, seed: int, *, device: str = "cpu") -> dict[str, float]:
    """Items/s of the model alone (halting on the head) at batch 1 (32 items one by one) and 256."""
    items = data.items(256, "eval", seed)
    tokens = torch.from_numpy(data.encode(items)).to(device)
    cap = model.cfg.N_sup
    if isinstance(data, FrameMazeData):  # the worker's way: every grid in its sub-frame
        groups = data.groups(items)
        subs = {side: sub_model(model, data.frame, side) for side in groups}  # type: ignore[arg-type]
        enc = {side: torch.from_numpy(data.encode([items[k] for k in idx], side)).to(device) for side, idx in groups.items()}
        order = [(side, j) for side, idx in groups.items() for j in range(len(idx))][:32]
        t0 = time.perf_counter()
        for side, j in order:
            run_recursive(subs[side], enc[side][j : j + 1], cap)
        one = len(order) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for side in groups:
            run_recursive(subs[side], enc[side], cap)
        return {"batch_1": round(one, 1), "batch_256": round(256 / (time.perf_counter() - t0), 1)}
    t0 = time.perf_counter()
    for k in range(32):
        run_recursive(model, tokens[k : k + 1], cap)
    one = 32 / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    run_recursive(model, tokens, cap)
    many = 256 / (time.perf_counter() - t0)
    return {"batch_1": round(one, 1), "batch_256": round(many, 1)}


# --------------------------------------------------------------------------------------- #
# the eval command


def check_args(args: argparse.Namespace) -> None:
    """--skill and --model name a tiny recursive model's task."""
    if args.skill not in SKILLS:
        raise InputError(f"--skill must be one of {', '.join(SKILLS)} for tiny models, got {args.skill!r}")
    if args.model not in ("trm", "hrm"):
        raise InputError(f"--model must be 'trm' or 'hrm' here, got {args.model!r}")


def _frame_data(args: argparse.Namespace, card: dict[str, Any]) -> FrameMazeData:
    family = getattr(args, "family", None)
    rows, cols, size = getattr(args, "rows", None), getattr(args, "cols", None), args.size
    if size and (rows or cols):
        raise InputError("give --size N (square) or --rows and --cols, not both")
    if size:
        rows = cols = int(size)
    return FrameMazeData(int(card["frame"]), int(args.seed), family=family, rows=rows, cols=cols)


def _givens(raw: str | None, skill: str) -> tuple[int, int] | None:
    """``--givens LO-HI`` (or N) as (lo, hi); None when not given."""
    if raw is None:
        return None
    if skill != "sudoku.solve":
        raise InputError("--givens is for sudoku.solve")
    lo, _, hi = str(raw).partition("-")
    try:
        return int(lo), int(hi or lo)
    except ValueError:
        raise InputError(f"--givens takes LO-HI clue counts (e.g. 22-29) or one count, got {raw!r}") from None


def eval_command(args: argparse.Namespace) -> int:
    """``tinyfleet eval``: exact accuracy, calibration, mean steps, items/s; ``--json``.
    ``--checkpoint PATH`` evaluates that file instead of the bundled one (its card gives the
    size or frame). For maze.route, ``--family`` (with ``--rows``/``--cols`` or ``--size``)
    or ``--frame`` evaluates a frame model on that family and shape."""
    args.model = args.model or "trm"
    check_args(args)
    set_torch_threads()
    device = default_device()
    given = getattr(args, "checkpoint", None)
    family, frame = getattr(args, "family", None), getattr(args, "frame", None)
    if args.skill != "maze.route" and (family or frame or getattr(args, "rows", None) or getattr(args, "cols", None)):
        raise InputError("--family, --rows, --cols and --frame are for maze.route")
    givens = _givens(getattr(args, "givens", None), args.skill)
    if (getattr(args, "rows", None) or getattr(args, "cols", None)) and not family:
        raise InputError("--rows and --cols need --family (perfect, loops, random or rooms)")
    if given:
        path = Path(given)
        model, card = load_checkpoint(path, device)
        if card.get("skill") != args.skill:
            raise InputError(f"--checkpoint {path} holds a {card.get('skill')} model, not {args.skill}")
    elif family or frame:
        where = getattr(args, "out", None)  # a directory to look in instead of the bundled one
        frames = available_frames(args.skill, args.model, where)
        pick = frame or (frames[-1] if frames else None)
        if pick is None or pick not in frames:
            raise ConfigError(f"no {args.skill} {args.model} frame checkpoint{f' f{frame}' if frame else ''} is bundled "
                              f"(have {frames or 'none'}); train one with `tinyfleet train --skill maze.route --frame 15`")
        path = checkpoint_path(args.skill, args.model, pick, where, frame=True)
        model, card = load_checkpoint(path, device)
    else:
        size = args.size or (6 if args.skill == "sudoku.solve" else 11)
        path = checkpoint_path(args.skill, args.model, size, getattr(args, "out", None))
        model, card = load_checkpoint(path, device)
    if "frame" in card:
        data: TaskData = _frame_data(args, card)
    else:
        if family:
            raise InputError(f"--family needs a frame checkpoint; {path.name} reads {card['size']}x{card['size']} mazes only")
        data = (SudokuData(int(card["size"]), int(args.seed), givens=givens) if givens
                else task_data(args.skill, int(card["size"]), int(args.seed)))
    calibration = Calibration.from_card(card) if getattr(args, "calibrated", False) else None
    if getattr(args, "calibrated", False) and calibration is None:
        raise InputError(f"--calibrated needs a calibrated checkpoint; {path.name} has no calibration block "
                         f"(tinyfleet calibrate --checkpoint {path})")
    r = evaluate(model, data, int(args.n), int(args.seed), halt=bool(getattr(args, "halt", True)), device=device,
                 calibration=calibration)
    r["model"] = args.model
    r["checkpoint"] = path.name
    r["train_wall_s"] = card.get("wall_s")
    shape = f"{data.size}x{data.size}"
    if givens:
        r["givens"] = f"{givens[0]}-{givens[1]}"
        shape += f" with {givens[0]}-{givens[1]} givens"
    if isinstance(data, FrameMazeData):
        r |= {"frame": data.frame, "family": data.family or "mixture", "rows": data.rows, "cols": data.cols}
        shape = f"{data.family or 'mixture'} {f'{data.rows}x{data.cols}' if data.rows else f'up to {data.frame}x{data.frame}'} (frame {data.frame})"
    if getattr(args, "json", False):
        print(json.dumps(r))
    else:
        ce = "n/a" if r["confident_exact"] is None else f"{100 * r['confident_exact']:.1f}%"
        print(f"{args.skill} {args.model} {shape}: exact {100 * r['exact']:.1f}% on {r['n']} (seed {r['seed']}); "
              f"confidence>=0.9: {100 * r['confident_share']:.1f}% of answers, {ce} correct; "
              f"mean steps {r['mean_steps']:.2f} of {r['max_steps']}{' (halting)' if r['halt'] else ''}; "
              f"{r['items_per_s']:.0f} items/s")
    return 0
