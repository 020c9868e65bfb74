"""Training recipes: the optimizer, schedule and data settings that worked per task and
device (:class:`Recipe`, :func:`default_recipe`), ``--set KEY=VALUE`` overrides, and the model
a recipe trains (:func:`make_model`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

from tinyfleet_core.errors import InputError
from workers.kits import sudoku
from workers.models.hrm import HRM, HRMConfig
from workers.models.trm import TRM, TRMConfig
from workers.training.data import TaskData

__all__ = ["Recipe", "default_recipe", "make_model", "split_overrides"]


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
    hard: float = 0.0  # sudoku 9x9: share of the pool from the hard band (22-29 givens, data.HARD_GIVENS)


def default_recipe(skill: str, model: str, size: int, device: str = "cpu", frame: int = 0) -> tuple[dict[str, Any], Recipe]:
    """(model config overrides, recipe) that worked for this task on this kind of device;
    ``frame`` for one maze model of every grid up to frame x frame."""
    gpu = device == "cuda"
    cfg: dict[str, Any]
    if frame:
        # CPU probes (2026-12-02/03, 5 min each, 1 torch thread): attention plateaued at 4-5% held-out
        # exact on the mixture (and stayed there for 65 min); a 3x3 grid conv (no positions, one
        # cell per block, n=3) reached 18% in the same 5 min; T=3 learned more per step but ran
        # 3x slower per step. Batch 32 / lr 2e-3 beat batch 64 / lr 1e-3 and batch 16 (attention).
        cfg = {"d": 128 if gpu else 64, "n": 3, "T": 2, "N_sup": 8, "mixer": "conv"}
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


def make_model(model: str, data: TaskData, overrides: dict[str, Any]) -> TRM | HRM:
    if model not in ("trm", "hrm"):
        raise InputError(f"model must be 'trm' or 'hrm', got {model!r}")
    base = dict(vocab=data.vocab, classes=data.classes, seq_len=data.seq_len, **overrides)
    known = set((TRMConfig if model == "trm" else HRMConfig).__dataclass_fields__)
    if set(base) - known:
        raise InputError(f"unknown {model} setting(s) {sorted(set(base) - known)}; model fields are "
                         f"{sorted(known)}, recipe fields {sorted(f.name for f in fields(Recipe))}")
    return TRM(TRMConfig(**base)) if model == "trm" else HRM(HRMConfig(**base))
