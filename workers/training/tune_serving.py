"""Measure the batch size that serves a TRM/HRM checkpoint fastest on this machine and write
it into the checkpoint's model card under ``"serving"`` (:mod:`workers.serving.serving_tune`).

    python -m workers.training.tune_serving --skill sudoku.solve --model trm --size 9 --out workers/checkpoints
    python -m workers.training.tune_serving --checkpoint PATH [--n 256] [--rounds 3] [--dry-run]

Method: ``--n`` held-out items from the kit's generator (split ``serving``, disjoint by seed
namespace from training's) are encoded as the worker encodes them and run through the
worker's own forward pass (:func:`workers.serving.neural.run_rows`: halting on, the card's
calibration, its step cap) under ``torch.inference_mode`` on one torch thread, in chunks of
each batch size; the time is this process's CPU time (``time.process_time``), so other load
on a shared machine changes the numbers less than it changes wall time. The batch sizes are
visited round-robin ``--rounds`` times and each one's median is kept. The best batch is the
one of most items per CPU-second; a smaller one within ``--tolerance`` (default 3%) of it is
preferred (less latency, same speed).

``--compare`` also measures, at the best batch, what did not make the cut (``torch.no_grad``
instead of ``inference_mode``; ``torch.compile`` with its compile time) and records it under
``serving.tried``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from tinyfleet_core.errors import ConfigError, InputError
from workers.models.trm import RecursiveModel, run_recursive
from workers.serving.calibration import Calibration
from workers.serving.catalog import update_card
from workers.serving.neural import checkpoint_path, load_checkpoint, run_rows, set_torch_threads, sub_model
from workers.serving.serving_tune import ServingProfile
from workers.training.args import USER_CHECKPOINT_DIR
from workers.training.data import task_data

__all__ = ["BATCHES", "SPLIT", "Served", "measure_curve", "pick_best", "tune_checkpoint", "write_serving", "main"]

BATCHES = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128, 256)
SPLIT = "serving"


class Served:
    """A checkpoint loaded to be measured as the worker serves it: model, card, calibration,
    step cap, and the held-out items encoded as (model, tokens) groups (a frame model's grids
    grouped by the sub-frame each runs in, as the worker groups them)."""

    def __init__(self, path: Path | str, n: int, seed: int = 0, split: str = SPLIT) -> None:
        self.path = Path(path)
        self.model, self.card = load_checkpoint(self.path, "cpu")
        skill, size = self.card.get("skill"), self.card.get("size")
        if not isinstance(skill, str) or not isinstance(size, int):
            raise ConfigError(f"model card {self.path.with_suffix('.json')} names no skill and size; it cannot say which items to measure on")
        self.skill, self.size = skill, size
        self.cal = Calibration.from_card(self.card, f"model card of {self.path.stem}")
        self.cap = int(self.card.get("infer_steps") or self.card["config"]["N_sup"])
        frame = int(self.card.get("frame") or 0)
        data = task_data(skill, size, seed, frame=frame)  # a frame model: the training mixture of grid families
        items = data.items(n, split, seed)
        self.items = items  # the generator's items (sudoku: (puzzle, solution); mazes: grids)
        groups = getattr(data, "groups", None)
        self.groups: list[tuple[RecursiveModel, torch.Tensor]] = []
        if frame and groups is not None:
            for side, idx in sorted(groups(items).items()):
                sub = sub_model(self.model, frame, side)  # type: ignore[arg-type]
                self.groups.append((sub, torch.from_numpy(data.encode([items[i] for i in idx], side=side))))  # type: ignore[call-arg]
        else:
            self.groups.append((self.model, torch.from_numpy(data.encode(items))))
        self.n = sum(len(t) for _, t in self.groups)

    def run(self, batch: int, forward: Callable[..., Any] | None = None) -> float:
        """CPU seconds to serve every item in chunks of ``batch``."""
        fwd = forward or run_rows
        c0 = time.process_time()
        for model, tokens in self.groups:  # run_recursive runs under torch.inference_mode
            for s in range(0, len(tokens), batch):
                chunk = tokens[s : s + batch]
                fwd(model, chunk, torch.full((len(chunk),), self.cap, dtype=torch.long), self.cal)
        return time.process_time() - c0


def measure_curve(served: Served, batches: Sequence[int] = BATCHES, rounds: int = 3, log: Any = sys.stderr) -> dict[int, float]:
    """Items per CPU-second at each batch size: median over ``rounds`` round-robin visits."""
    served.run(min(8, max(batches)))  # warm up (allocator, first-call costs)
    times: dict[int, list[float]] = {b: [] for b in batches}
    for r in range(rounds):
        for b in batches:
            times[b].append(served.run(b))
        print(f"[tune-serving] {served.path.stem} round {r + 1}/{rounds}: "
              + ", ".join(f"{b}: {served.n / times[b][-1]:.0f}" for b in batches) + " items/CPU-s", file=log, flush=True)
    return {b: served.n / statistics.median(ts) for b, ts in times.items()}


def pick_best(curve: dict[int, float], tolerance: float = 0.03) -> int:
    """The smallest batch within ``tolerance`` of the most items per CPU-second."""
    top = max(curve.values())
    return min(b for b, v in curve.items() if v >= top * (1 - tolerance))


def _machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "platform": platform.platform(), "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def _no_grad_forward(model: RecursiveModel, tokens: torch.Tensor, caps: torch.Tensor, cal: Calibration | None) -> Any:
    """The served pass under ``torch.no_grad`` instead of ``inference_mode`` (run_recursive's
    undecorated body, the same halting and calibration as :func:`run_rows`)."""
    inner = run_recursive.__wrapped__  # type: ignore[attr-defined]
    with torch.no_grad():
        if cal is None:
            return inner(model, tokens, caps, halt=True)
        apply = cal.apply

        def calibrate(h: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(apply(h.float().cpu().numpy())).float()

        return inner(model, tokens, caps, halt=True, calibrate=calibrate, halt_threshold=cal.threshold)


def compare_options(served: Served, batch: int, rounds: int = 3, log: Any = sys.stderr) -> dict[str, Any]:
    """Items per CPU-second at ``batch`` of the served forward pass against the variants that
    were weighed: ``torch.no_grad`` and ``torch.compile`` (its compile time apart); ratios to
    the served pass, one process, interleaved."""
    out: dict[str, Any] = {"batch": batch}
    variants: dict[str, Callable[..., Any] | None] = {"inference_mode (served)": None, "no_grad": _no_grad_forward}
    variants.update(_compiled_variants(served, batch, out, log))
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for name, fwd in variants.items():
            times[name].append(served.run(batch, fwd))
    base = statistics.median(times["inference_mode (served)"])
    for name, ts in times.items():
        med = statistics.median(ts)
        out[name] = {"items_per_cpu_s": round(served.n / med, 1), "vs_served": round(base / med, 3)}
    return out


def _compiled_variants(served: Served, batch: int, out: dict[str, Any], log: Any) -> dict[str, Callable[..., Any]]:
    """torch.compile of each model's ``step`` (dynamic shapes: halted rows leave the batch),
    timed from the first call to the end of a warm-up pass over every item."""
    found: dict[str, Callable[..., Any]] = {}
    originals = [(m, m.step) for m, _ in served.groups]
    try:
        compiled = {id(m): torch.compile(m.step, dynamic=True) for m, _ in served.groups}
    except (RuntimeError, AssertionError) as e:  # noqa: BLE001 - reported, not hidden
        out["torch.compile"] = {"error": f"{type(e).__name__}: {e}"[:200]}
        return found

    def compiled_forward(model: RecursiveModel, tokens: torch.Tensor, caps: torch.Tensor, cal: Calibration | None) -> Any:
        fn = compiled[id(model)]
        orig = model.step
        model.step = fn  # type: ignore[method-assign]
        try:
            return run_rows(model, tokens, caps, cal)
        finally:
            model.step = orig  # type: ignore[method-assign]

    c0, w0 = time.process_time(), time.perf_counter()
    try:
        served.run(batch, compiled_forward)  # compiles (and recompiles for the shapes it meets)
    except Exception as e:  # noqa: BLE001 - an inductor failure is a measurement, reported
        out["torch.compile"] = {"error": f"{type(e).__name__}: {e}"[:200]}
        for m, step in originals:
            m.step = step  # type: ignore[method-assign]
        return found
    out["torch.compile first pass"] = {"cpu_s": round(time.process_time() - c0, 2), "wall_s": round(time.perf_counter() - w0, 2)}
    print(f"[tune-serving] torch.compile first pass: {out['torch.compile first pass']}", file=log, flush=True)
    found["torch.compile (dynamic)"] = compiled_forward
    return found


def tune_checkpoint(path: Path | str, *, n: int = 256, rounds: int = 3, seed: int = 0, batches: Sequence[int] = BATCHES,
                    tolerance: float = 0.03, compare: bool = False, command: str | None = None,
                    log: Any = sys.stderr) -> ServingProfile:
    """Measure the checkpoint at ``path``; returns its profile (writing it is the caller's)."""
    if n < 1 or rounds < 1 or not batches or min(batches) < 1:
        raise InputError(f"--n and --rounds must be >= 1 and every batch size >= 1, got n={n}, rounds={rounds}, batches={list(batches)}")
    set_torch_threads()
    served = Served(path, n, seed)
    t0 = _dt.datetime.now(_dt.UTC)
    curve = measure_curve(served, batches, rounds, log)
    best = pick_best(curve, tolerance)
    measured: dict[str, Any] = {
        "items_per_cpu_s": {str(b): round(v, 1) for b, v in curve.items()},
        "at_batch_1": round(curve[1], 1) if 1 in curve else None,
        "at_best": round(curve[best], 1),
        "at_256": round(curve[256], 1) if 256 in curve else None,
        "unit": "items per CPU-second of this process, one torch thread, torch.inference_mode, halting as served",
        "n": served.n, "rounds": rounds, "split": SPLIT, "seed": seed, "tolerance": tolerance,
        "machine": _machine(), "date": t0.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command or f"python -m workers.training.tune_serving --checkpoint {path} --n {n} --rounds {rounds}",
    }
    if compare:
        measured["tried"] = compare_options(served, best, rounds, log)
    print(f"[tune-serving] {served.path.stem}: best batch {best} ({curve[best]:.0f} items/CPU-s; "
          f"batch 1 {curve.get(1, float('nan')):.0f}, batch 256 {curve.get(256, float('nan')):.0f})", file=log, flush=True)
    return ServingProfile(best, measured)


def write_serving(path: Path | str, profile: ServingProfile) -> Path:
    """Put ``profile`` into the card next to checkpoint ``path``; every other key stays as it was."""
    return update_card(path, profile.into_card)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tinyfleet tune-serving", description=__doc__.split("\n\n")[0])
    p.add_argument("--skill", default=None, help="sudoku.solve or maze.route (with --model and --size: a checkpoint in --out)")
    p.add_argument("--model", default="trm")
    p.add_argument("--size", type=int, default=0)
    p.add_argument("--checkpoint", default=None, help="a .safetensors file (its card gives skill and size)")
    p.add_argument("--out", default=str(USER_CHECKPOINT_DIR),
                   help=f"directory holding the checkpoint named by --skill/--model/--size (default ./{USER_CHECKPOINT_DIR}; "
                        "--out workers/checkpoints for the bundled ones)")
    p.add_argument("--n", type=int, default=256, help="held-out items per measurement (at least the largest batch)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batches", default=",".join(map(str, BATCHES)), help="comma-separated batch sizes")
    p.add_argument("--tolerance", type=float, default=0.03, help="prefer a smaller batch within this share of the best")
    p.add_argument("--compare", action="store_true", help="also measure no_grad, torch.compile at the best batch")
    p.add_argument("--dry-run", action="store_true", help="measure and print, do not write the card")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        batches = sorted({int(b) for b in str(args.batches).split(",") if b.strip()})
    except ValueError:
        raise InputError(f"--batches must be comma-separated integers, got {args.batches!r}") from None
    if args.checkpoint:
        path = Path(args.checkpoint)
    elif args.skill and args.size:
        path = checkpoint_path(args.skill, args.model, args.size, args.out)
    else:
        raise InputError("name a checkpoint: --checkpoint PATH, or --skill, --model and --size (and --out)")
    prog = "python -m workers.training.tune_serving" if argv is None else "tinyfleet tune-serving"  # the CLI passes argv
    command = " ".join([prog, *(sys.argv[1:] if argv is None else argv)])
    prof = tune_checkpoint(path, n=args.n, rounds=args.rounds, seed=args.seed, batches=batches,
                           tolerance=args.tolerance, compare=args.compare, command=command)
    written = None if args.dry_run else str(write_serving(path, prof))
    print(json.dumps({"checkpoint": str(path), "card": written, "serving": prof.to_dict()}))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ConfigError, InputError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
