"""Calibrate one checkpoint's halting after training and write it into its model card.

    python -m workers.training.calibrate --skill sudoku.solve --model trm --size 9 [--n 1000]
    python -m workers.training.calibrate --skill maze.route --checkpoint PATH

Method (issue 15, point 3):

1. Two held-out splits of the trainer's task data, disjoint by seed namespace from training
   (``train:``), the periodic and final check that the card's ``eval`` holds (``valid:``) and
   ``tinyfleet eval`` (``eval:``): ``calibrate`` to fit, ``calibrate-check`` to measure.
2. Every fit item runs to the step cap (``infer_steps`` or ``N_sup``) keeping each step's
   halting logit and whether that step's answer is right (the skill's own checker).
3. A map from logit to P(correct) is fitted on all (item, step) pairs: isotonic (pool adjacent
   violators, then each block's rate shrunk by one pseudo-success and one pseudo-failure, so a
   block that was always right says 0.9995 rather than 1) or a temperature and bias (Platt).
4. The halting threshold is the one of least mean steps whose simulated exact accuracy on the
   fit split is within ``tolerance - margin`` of running every row to the cap, simulated with
   cross-fitted confidences (each item's from a map fitted on the other folds, so the choice
   sees what new items see), the highest within 0.02 steps of that least cost.
5. On the check split the served loop itself (``run_recursive`` with the calibration) is
   measured: exact at the cap vs halted, mean steps, and how often answers with confidence
   >= 0.9 are right (with their count); the same for the model's own halting, for comparison.
   The numbers are reported as measured, met or not.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from tinyfleet_core.errors import ConfigError, InputError
from workers.models.trm import RecursiveModel, run_recursive
from workers.serving import neural
from workers.serving.calibration import METHODS, Calibration, Method
from workers.serving.catalog import update_card
from workers.serving.neural import checkpoint_path, load_checkpoint, set_torch_threads
from workers.training.args import USER_CHECKPOINT_DIR
from workers.training.trainer import TaskData, task_data

__all__ = [
    "CHECK_SPLIT",
    "FIT_SPLIT",
    "Trace",
    "calibrate_checkpoint",
    "choose_threshold",
    "cross_fitted",
    "fit_isotonic",
    "fit_temperature",
    "main",
    "simulate",
    "torch_map",
    "trace",
]

FIT_SPLIT = "calibrate"
CHECK_SPLIT = "calibrate-check"
CONFIDENT = 0.9  # the confidence the targets speak of
Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]


# --------------------------------------------------------------------------------------- #
# every step of every item


@dataclass
class Trace:
    """Per item and supervision step (n, K): the raw halting logit, whether the model's own
    rule halts there, and whether that step's answer is right."""

    logits: Floats
    native_halt: Bools
    correct: Bools

    @property
    def steps(self) -> int:
        return int(self.logits.shape[1])


def _batches(model: RecursiveModel, data: TaskData, items: list[Any], batch: int) -> list[tuple[list[int], RecursiveModel, dict[str, int]]]:
    """(item indices, the model that runs them, keyword arguments of encode/correct) per batch,
    as the evaluation runs them: a frame model's grids grouped by the sub-frame side each runs
    in (``data.groups``, ``neural.sub_model``), every other model's items in order."""
    groups = getattr(data, "groups", None)
    sub_model = getattr(neural, "sub_model", None)
    if groups is None or sub_model is None:
        return [(list(range(s, min(s + batch, len(items)))), model, {}) for s in range(0, len(items), batch)]
    frame = int(data.frame)  # type: ignore[attr-defined]  # only frame data have groups
    out: list[tuple[list[int], RecursiveModel, dict[str, int]]] = []
    for side, idx in sorted(groups(items).items()):
        sub = sub_model(model, frame, side)
        out += [(idx[s : s + batch], sub, {"side": side}) for s in range(0, len(idx), batch)]
    return out


@torch.inference_mode()
def trace(model: RecursiveModel, data: TaskData, items: list[Any], steps: int, *, batch: int = 256, device: str = "cpu") -> Trace:
    """Run every item for ``steps`` supervision steps, keeping what each step says."""
    n = len(items)
    logits = np.zeros((n, steps))
    native = np.zeros((n, steps), dtype=bool)
    correct = np.zeros((n, steps), dtype=bool)
    for idx, m, kw in _batches(model, data, items, batch):
        chunk = [items[i] for i in idx]
        tokens = torch.from_numpy(data.encode(chunk, **kw)).to(device)
        x = m.embed(tokens)  # (b, L, D)
        state = m.init_state(len(chunk))
        seen: list[dict[bytes, bool]] = [{} for _ in chunk]  # answers repeat across steps: check once
        for k in range(steps):
            out = m.step(x, state)
            state = out.state
            logits[idx, k] = out.halt.float().cpu().numpy()
            native[idx, k] = m.should_halt(out).cpu().numpy()
            pred = out.logits.argmax(-1).cpu().numpy()  # (b, S)
            todo = [i for i in range(len(chunk)) if pred[i].tobytes() not in seen[i]]
            if todo:
                verdicts = data.correct([chunk[i] for i in todo], pred[todo], **kw)
                for i, v in zip(todo, verdicts, strict=True):
                    seen[i][pred[i].tobytes()] = bool(v)
            correct[idx, k] = [seen[i][pred[i].tobytes()] for i in range(len(chunk))]
    return Trace(logits, native, correct)


# --------------------------------------------------------------------------------------- #
# fitting the map


def _pav(num: Floats, den: Floats) -> list[list[int]]:
    """Pool adjacent violators on rates num/den (ascending order of the inputs): groups of
    consecutive indices whose pooled rates do not decrease."""
    blocks: list[list[int]] = []
    nums: list[float] = []
    dens: list[float] = []
    for i in range(len(num)):
        blocks.append([i])
        nums.append(float(num[i]))
        dens.append(float(den[i]))
        while len(blocks) > 1 and nums[-2] / dens[-2] >= nums[-1] / dens[-1]:
            tail, tn, td = blocks.pop(), nums.pop(), dens.pop()
            blocks[-1] += tail
            nums[-1] += tn
            dens[-1] += td
    return blocks


def fit_isotonic(logits: npt.ArrayLike, correct: npt.ArrayLike) -> tuple[tuple[float, float], ...]:
    """Knots (logit, confidence) of a monotone map from logit to P(correct): PAV on the pairs
    (equal logits pooled), each block's rate shrunk to (right + 1) / (count + 2), PAV again."""
    h = np.asarray(logits, dtype=np.float64).ravel()
    y = np.asarray(correct, dtype=np.float64).ravel()
    if h.size == 0:
        raise InputError("no (logit, correct) pairs to calibrate on; pass --n of at least 1")
    xs, inv = np.unique(h, return_inverse=True)
    right = np.bincount(inv, weights=y, minlength=len(xs)).astype(np.float64)
    count = np.bincount(inv, minlength=len(xs)).astype(np.float64)
    first = _pav(right, count)
    k = np.array([right[b].sum() for b in first])
    m = np.array([count[b].sum() for b in first])
    second = _pav(k + 1.0, m + 2.0)
    knots: list[tuple[float, float]] = []
    for blk in second:
        groups = [g for i in blk for g in first[i]]
        value = float((k[blk].sum() + len(blk)) / (m[blk].sum() + 2 * len(blk)))
        lo, hi = float(xs[min(groups)]), float(xs[max(groups)])
        knots.append((lo, value))
        if hi > lo:
            knots.append((hi, value))
    return tuple(knots)


def fit_temperature(logits: npt.ArrayLike, correct: npt.ArrayLike, *, ridge: float = 1e-3) -> tuple[float, float]:
    """(temperature, bias) with ``sigmoid(logit / temperature + bias)`` of least log loss
    (Newton's method; a small ridge keeps it finite when every pair is right)."""
    h = np.asarray(logits, dtype=np.float64).ravel()
    y = np.asarray(correct, dtype=np.float64).ravel()
    if h.size == 0:
        raise InputError("no (logit, correct) pairs to calibrate on; pass --n of at least 1")
    X = np.stack([h, np.ones_like(h)], 1)  # (N, 2)
    w = np.array([1.0, 0.0])
    prior = np.array([1.0, 0.0])
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-np.clip(X @ w, -50, 50)))
        grad = X.T @ (p - y) / len(h) + ridge * (w - prior)
        hess = (X * (p * (1 - p))[:, None]).T @ X / len(h) + ridge * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w = w - step
        if np.abs(step).max() < 1e-9:
            break
    a = max(float(w[0]), 1e-3)  # a head that anti-correlates with correctness: flatten, not flip
    return 1.0 / a, float(w[1])


def _log_loss(conf: Floats, correct: Bools) -> float:
    c = np.clip(conf, 1e-6, 1 - 1e-6)
    return float(-np.mean(np.where(correct, np.log(c), np.log(1 - c))))


# --------------------------------------------------------------------------------------- #
# choosing the threshold


@dataclass(frozen=True)
class Halted:
    """What halting does to a trace: per item the step it stops at (1-based), whether that
    answer is right and the confidence it reports."""

    steps: npt.NDArray[np.int64]
    correct: Bools
    confidence: Floats

    @property
    def exact(self) -> float:
        return float(self.correct.mean())

    @property
    def mean_steps(self) -> float:
        return float(self.steps.mean())

    def confident(self, level: float = CONFIDENT) -> tuple[int, float | None]:
        """(count, share right) of answers with confidence >= ``level``."""
        sure = self.confidence >= level
        return int(sure.sum()), (float(self.correct[sure].mean()) if sure.any() else None)


def simulate(tr: Trace, conf: Floats, stop: Bools) -> Halted:
    """Halt each row at its first step where ``stop`` (n, K) holds, else at the last."""
    n, K = stop.shape
    last = stop.copy()
    last[:, -1] = True
    at = last.argmax(1)  # (n,) first stopping step, 0-based
    rows = np.arange(n)
    return Halted(at + 1, tr.correct[rows, at], conf[rows, at])


def choose_threshold(
    tr: Trace, conf: Floats, *, tolerance: float, margin: float, slack: float = 0.02
) -> tuple[float, Halted]:
    """The threshold of least mean steps whose exact accuracy is within ``tolerance - margin``
    of the last step's; of those within ``slack`` steps of that least cost, the highest (a
    threshold at the very edge of what the fit items reached is fragile on new items).
    1.0: never halt early."""
    floor = float(tr.correct[:, -1].mean()) - (tolerance - margin)
    cands = np.unique(conf)
    if len(cands) > 2000:
        cands = np.unique(np.quantile(conf, np.linspace(0, 1, 2001)))
    feasible: list[tuple[float, Halted]] = [(1.0, simulate(tr, conf, conf >= 1.0))]
    for t in cands[::-1]:
        h = simulate(tr, conf, conf >= t)
        if h.exact + 1e-12 >= floor:
            feasible.append((float(t), h))
    least = min(h.mean_steps for _, h in feasible)
    return max((pair for pair in feasible if pair[1].mean_steps <= least + slack), key=lambda p: p[0])


def _fit_map(method: Method, logits: Floats, correct: Bools) -> Calibration:
    """The map alone (threshold 1.0: not chosen yet)."""
    if method == "isotonic":
        return Calibration("isotonic", 1.0, knots=fit_isotonic(logits, correct))
    temperature, bias = fit_temperature(logits, correct)
    return Calibration("temperature", 1.0, temperature, bias)


def cross_fitted(tr: Trace, method: Method, folds: int = 5) -> Floats:
    """Each item's calibrated confidences (n, K) from a map fitted without that item (items
    dealt into ``folds`` folds): what new items will see, so the threshold is chosen on them."""
    n = tr.logits.shape[0]
    fold = np.arange(n) % max(1, min(folds, n))
    out = np.empty_like(tr.logits)
    for f in np.unique(fold):
        held = fold == f
        if held.all():  # one item (or one fold): nothing to fit on but itself
            out[held] = _fit_map(method, tr.logits, tr.correct).apply(tr.logits[held])
            continue
        out[held] = _fit_map(method, tr.logits[~held], tr.correct[~held]).apply(tr.logits[held])
    return out


# --------------------------------------------------------------------------------------- #
# one checkpoint


def torch_map(cal: Calibration) -> Callable[[torch.Tensor], torch.Tensor]:
    """``cal.apply`` for ``run_recursive``'s ``calibrate``: logits (b,) -> confidence (b,)."""

    def apply(h: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(cal.apply(h.detach().float().cpu().numpy())).float().to(h.device)

    return apply


def _served(model: RecursiveModel, data: TaskData, items: list[Any], cap: int, cal: Calibration | None,
            batch: int, device: str) -> Halted:
    """The serving loop itself on ``items``: calibrated when ``cal`` is given, else as before."""
    n = len(items)
    steps = np.zeros(n, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    conf = np.zeros(n)
    for idx, m, kw in _batches(model, data, items, batch):
        chunk = [items[i] for i in idx]
        tokens = torch.from_numpy(data.encode(chunk, **kw)).to(device)
        if cal is None:
            res = run_recursive(m, tokens, cap, halt=True)
        else:
            res = run_recursive(m, tokens, cap, halt=True, calibrate=torch_map(cal), halt_threshold=cal.threshold)
        ok[idx] = data.correct(chunk, res.pred.cpu().numpy(), **kw)
        conf[idx] = res.confidence.cpu().numpy()
        steps[idx] = res.steps.cpu().numpy()
    return Halted(steps, ok, conf)


def _r(x: float | None, k: int = 4) -> float | None:
    return None if x is None else round(float(x), k)


def _check_options(n: int, check_n: int | None, method: str, tolerance: float, margin: float) -> None:
    if n < 1 or (check_n is not None and check_n < 1):
        raise InputError(f"--n must be at least 1, got {n if n < 1 else check_n}")
    if method not in METHODS:
        raise InputError(f"--method must be one of {list(METHODS)}, got {method!r}")
    if not 0 < tolerance < 1 or not 0 <= margin < tolerance:
        raise InputError(f"--tolerance must be in (0, 1) and --margin in [0, tolerance), got {tolerance} and {margin}")


def _load_for_calibration(path: Path | str, seed: int, device: str) -> tuple[RecursiveModel, TaskData, int]:
    """(the model, the task data its card names, the step cap it is served with)."""
    model, card = load_checkpoint(path, device)
    skill, size = card.get("skill"), card.get("size")
    if not isinstance(skill, str) or not isinstance(size, int):
        raise ConfigError(f"model card of {path} names no skill and size; it cannot say which items to calibrate on")
    frame = int(card.get("frame") or 0)  # a frame model (maze.route-trm-fF) reads every grid up to F x F
    by_frame: dict[str, Any] = {"frame": frame} if frame else {}
    data = task_data(skill, size, seed, **by_frame)  # a frame model: the training mixture of grid families
    cap = int(card.get("infer_steps", card["config"]["N_sup"]))
    return model, data, cap


def _check_numbers(chk: Trace, served: Halted, native: Halted, cal: Calibration, m: int, seed: int, cap: int) -> dict[str, Any]:
    """The check split's measured numbers: the served loop with the calibration, the model's
    own halting, and the log loss of both confidences per step."""
    sure_n, sure_exact = served.confident()
    nat_n, nat_exact = native.confident()
    raw_conf = 1.0 / (1.0 + np.exp(-chk.logits))
    return {
        "split": CHECK_SPLIT, "seed": seed, "n": m, "steps": cap,
        "exact_at_cap": _r(float(chk.correct[:, -1].mean())),
        "exact_halted": _r(served.exact),
        "mean_steps_halted": _r(served.mean_steps, 3),
        "confident_n": sure_n,
        "confident_share": _r(sure_n / m),
        "confident_exact": _r(sure_exact),
        "native": {"exact": _r(native.exact), "mean_steps": _r(native.mean_steps, 3),
                   "confident_n": nat_n, "confident_exact": _r(nat_exact)},
        "log_loss_per_step": {"raw_sigmoid": _r(_log_loss(raw_conf, chk.correct)),
                              "calibrated": _r(_log_loss(cal.apply(chk.logits), chk.correct))},
    }


def calibrate_checkpoint(
    path: Path | str,
    *,
    n: int = 1000,
    check_n: int | None = None,
    seed: int = 0,
    method: Method = "isotonic",
    tolerance: float = 0.01,
    margin: float = 0.005,
    batch: int = 256,
    device: str = "cpu",
    log: Any = sys.stderr,
    command: str | None = None,
) -> Calibration:
    """Fit and check the calibration of the checkpoint at ``path`` (its card names skill and
    size); returns it with its measured numbers. Writing it into the card is the caller's."""
    _check_options(n, check_n, method, tolerance, margin)
    model, data, cap = _load_for_calibration(path, seed, device)
    t0 = _dt.datetime.now(_dt.UTC)

    fit_items = data.items(n, FIT_SPLIT, seed)
    fit = trace(model, data, fit_items, cap, batch=batch, device=device)
    print(f"[calibrate] fit split: {n} items x {cap} steps; exact at step {cap}: {fit.correct[:, -1].mean():.4f}",
          file=log, flush=True)
    shape = _fit_map(method, fit.logits, fit.correct)
    temperature, bias, knots = shape.temperature, shape.bias, shape.knots
    threshold, on_fit = choose_threshold(fit, cross_fitted(fit, method), tolerance=tolerance, margin=margin)
    print(f"[calibrate] threshold {threshold:.4f}: fit split (cross-fitted) exact {on_fit.exact:.4f} at "
          f"{on_fit.mean_steps:.2f} steps", file=log, flush=True)

    m = check_n or n
    check_items = data.items(m, CHECK_SPLIT, seed)
    chk = trace(model, data, check_items, cap, batch=batch, device=device)
    cal = Calibration(method, threshold, temperature, bias, knots)
    served = _served(model, data, check_items, cap, cal, batch, device)
    native = simulate(chk, 1.0 / (1.0 + np.exp(-chk.logits)), chk.native_halt)
    exact_cap = float(chk.correct[:, -1].mean())
    sure_n, sure_exact = served.confident()
    measured: dict[str, Any] = {
        "fit": {"split": FIT_SPLIT, "seed": seed, "n": n, "steps": cap, "tolerance": tolerance, "margin": margin,
                "exact_at_cap": _r(fit.correct[:, -1].mean()), "exact_halted": _r(on_fit.exact),
                "mean_steps_halted": _r(on_fit.mean_steps, 3), "threshold_on": "5-fold cross-fitted confidences"},
        "check": _check_numbers(chk, served, native, cal, m, seed, cap),
        "targets": {
            "halting_within_1_point": served.exact >= exact_cap - tolerance - 1e-12,
            "confident_right_98": sure_exact is not None and sure_exact >= 0.98,
        },
        "date": t0.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command or f"python -m workers.training.calibrate --checkpoint {path} --n {n}"
                   + (f" --check-n {m}" if m != n else "") + f" --seed {seed} --method {method}",
    }
    print(f"[calibrate] check split: exact {served.exact:.4f} halted ({served.mean_steps:.2f} steps) vs "
          f"{exact_cap:.4f} at {cap}; native halting {native.exact:.4f} ({native.mean_steps:.2f} steps); "
          f"confidence >= {CONFIDENT}: {sure_n} answers, {sure_exact} right", file=log, flush=True)
    return Calibration(method, threshold, temperature, bias, knots, measured)


def write_calibration(path: Path | str, cal: Calibration) -> Path:
    """Put ``cal`` into the card next to checkpoint ``path``; every other key stays as it was."""
    return update_card(path, cal.into_card)


# --------------------------------------------------------------------------------------- #
# CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tinyfleet calibrate", description=__doc__.split("\n\n")[0])
    p.add_argument("--skill", default=None, help="sudoku.solve or maze.route (with --model and --size: the bundled checkpoint)")
    p.add_argument("--model", default="trm")
    p.add_argument("--size", type=int, default=0)
    p.add_argument("--checkpoint", default=None, help="a .safetensors file (its card gives skill and size)")
    p.add_argument("--out", default=str(USER_CHECKPOINT_DIR),
                   help=f"directory holding the checkpoint named by --skill/--model/--size (default ./{USER_CHECKPOINT_DIR}, "
                        "where train writes; --out workers/checkpoints for the bundled ones)")
    p.add_argument("--n", type=int, default=1000, help="items in the fit split (and the check split unless --check-n)")
    p.add_argument("--check-n", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--method", choices=METHODS, default="isotonic")
    p.add_argument("--tolerance", type=float, default=0.01, help="exact accuracy halting may cost against the step cap")
    p.add_argument("--margin", type=float, default=0.005, help="kept in hand on the fit split, for the check split")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--dry-run", action="store_true", help="measure and print, do not write the card")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    set_torch_threads()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.checkpoint:
        path = Path(args.checkpoint)
    else:
        if not args.skill or not args.size:
            raise InputError("name a checkpoint: --checkpoint PATH, or --skill, --model and --size of a bundled one")
        path = checkpoint_path(args.skill, args.model, args.size, args.out)
    if args.skill:
        _, card = load_checkpoint(path, "cpu")
        if card.get("skill") != args.skill:
            raise InputError(f"--checkpoint {path} holds a {card.get('skill')} model, not {args.skill}")
    cal = calibrate_checkpoint(path, n=args.n, check_n=args.check_n, seed=args.seed, method=args.method,
                               tolerance=args.tolerance, margin=args.margin, batch=args.batch, device=device,
                               command=" ".join(["tinyfleet calibrate", *(sys.argv[1:] if argv is None else argv)]))
    written = None if args.dry_run else str(write_calibration(path, cal))
    print(json.dumps({"checkpoint": str(path), "card": written, "threshold": cal.threshold, "method": cal.method,
                      "temperature": cal.temperature, "bias": cal.bias, "measured": dict(cal.measured)}))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ConfigError, InputError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
