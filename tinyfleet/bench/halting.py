"""halting: TRM inference with early halting (each row stops when its halting head says so)
against always running the full cap of supervision steps, on every bundled TRM checkpoint.

Measured through the TRM workers themselves (their encoding, decoding and checkpoint
loading), with one switch added by a bench-only subclass: ``run_recursive(..., halt=True)``
(what the product runs) or ``halt=False`` (every row to the checkpoint's inference cap).
Batches of 256, one torch thread, answers judged by the skill's verifier. Reports mean
supervision steps, verified share and items/s. The issue sets no number; the check is that
halting is faster and loses at most 1 point on every checkpoint the product worker serves
(one under its 50% exact bar, or whose model card has no eval yet, is shown, not judged).
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel

from tinyfleet.bench.checkpoints import card as checkpoint_card
from tinyfleet.bench.checkpoints import card_exact, served_sizes
from workers.base import Job, Worker
from workers.builtin import maze_skill, sudoku_skill
from workers.kits import maze, sudoku
from workers.models.trm import run_recursive
from workers.serving.neural import TRMMazeWorker, TRMSudokuWorker, available_sizes

__all__ = ["run", "HaltSwitchSudoku", "HaltSwitchMaze"]

_CHUNK = 256


class _HaltSwitch:
    """Bench-only: serve every checkpoint, and run with halting on or off."""

    min_exact = 0.0
    halt_on = True
    models: dict[int, tuple[Any, dict[str, Any]]]
    device: str

    def _run(self, size: int, tokens: np.ndarray, caps: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        model, _ = self.models[size]
        res = run_recursive(model, torch.from_numpy(tokens).to(self.device), torch.tensor(caps, dtype=torch.long), halt=self.halt_on)
        return res.pred.cpu().numpy(), res.confidence.cpu().numpy(), res.steps.cpu().numpy()


class HaltSwitchSudoku(_HaltSwitch, TRMSudokuWorker):
    name = "sudoku.trm-halt-switch"


class HaltSwitchMaze(_HaltSwitch, TRMMazeWorker):
    name = "maze.trm-halt-switch"


def _inputs(skill: str, size: int, n: int, seed: int) -> list[BaseModel]:
    rng = random.Random(seed)
    if skill == "sudoku.solve":
        return [sudoku.SudokuInput(puzzle=sudoku.generate(size, rng)[0]) for _ in range(n)]
    return [maze.MazeInput(grid=maze.generate(size, rng)) for _ in range(n)]


def _infer(worker: Worker, inputs: Sequence[BaseModel]) -> tuple[list[Any], float]:
    t0 = time.perf_counter()
    out = []
    for i in range(0, len(inputs), _CHUNK):
        out.extend(worker.solve_batch([Job(x) for x in inputs[i : i + _CHUNK]]))
    return out, time.perf_counter() - t0


def run(quick: bool, *, tiny: bool = False) -> dict[str, Any]:
    n = 16 if tiny else (256 if quick else 512)
    reps = 1 if (quick or tiny) else 3
    rows: list[dict[str, Any]] = []
    verdicts: list[str] = []
    ok = True
    found = False  # any checkpoint at all
    for skill_name, cls in (("sudoku.solve", HaltSwitchSudoku), ("maze.route", HaltSwitchMaze)):
        sizes = available_sizes(skill_name, "trm")
        if not sizes:
            continue
        found = True
        skill = sudoku_skill() if skill_name == "sudoku.solve" else maze_skill()
        assert skill.verifier is not None
        worker = cls()
        worker.setup("cpu")  # one torch thread (TINYFLEET_TORCH_THREADS), every checkpoint
        for size in sizes:
            card = checkpoint_card(skill_name, "trm", size)
            exact_card = card_exact(skill_name, "trm", size)
            served = size in served_sizes(skill_name, "trm")
            judged = served and bool(card.get("eval"))  # a card without an eval is a checkpoint still in training
            m = n if served else min(n, 64)  # an unserved checkpoint: shown at a smaller size, not judged
            k = reps if served else 1
            inputs = _inputs(skill_name, size, m, seed=3)
            res: dict[bool, tuple[float, float, float]] = {}
            for halt in (True, False):
                worker.halt_on = halt
                runs = [_infer(worker, inputs) for _ in range(k)]
                attempts, _ = runs[0]
                secs = statistics.median(r[1] for r in runs)
                pairs = [(i, skill.output_model.model_validate(a.output)) for i, a in zip(inputs, attempts, strict=True) if a.output is not None]
                right = sum(v.ok for v in skill.verifier.check_batch(pairs)) if pairs else 0
                steps = float(np.mean([a.cost.recursion_steps for a in attempts]))
                res[halt] = (steps, right / m, m / secs)
                cap = int(card.get("infer_steps", card["config"]["N_sup"]))
                rows.append({
                    "skill": f"{skill_name} {size}x{size}", "inference": "early halting" if halt else f"always {cap} steps",
                    "items": m, "mean steps": steps, "verified %": 100 * right / m, "items/s": m / secs,
                    "served": "yes" if served else f"no (card: {100 * exact_card:.0f}% exact)",
                })
            (s_h, a_h, r_h), (s_f, a_f, r_f) = res[True], res[False]
            rows[-2]["speed-up"] = r_h / r_f
            rows[-1]["speed-up"] = 1.0
            if judged:
                ok &= r_h > r_f and a_h >= a_f - 0.01
            note = "" if judged else (
                " (not served by the product worker: under its 50% bar; not judged)" if not served
                else " (its model card has no eval yet; not judged)"
            )
            verdicts.append(
                f"{skill_name} {size}x{size}{note}: {s_h:.2f} vs {s_f:.0f} steps, {r_h / r_f:.1f}x items/s, "
                f"verified {100 * a_h:.1f}% vs {100 * a_f:.1f}%"
            )
    if not found:
        return {"rows": [], "summary": "no TRM checkpoint is bundled; nothing to measure", "ok": False}
    summary = f"early halting vs full depth ({n} items each, median of {reps}): " + "; ".join(verdicts)
    summary += " (check: faster, and at most 1 point less accurate)"
    return {"rows": rows, "summary": summary, "ok": ok,
            "plot": {"kind": "bar", "x": "skill", "group": "inference", "y": ["items/s"], "title": "halting: TRM early halting vs full depth"}}
