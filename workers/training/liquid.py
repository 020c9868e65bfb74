"""Training and evaluation of the liquid forecasters (``tinyfleet train|eval --skill series.*``).

Training draws fresh synthetic series every step (:func:`series.generate_series`), so data
never repeat; the loss is the pinball loss of p10/p50/p90 in each window's normalised units.
Evaluation runs on real series shipped inside statsmodels (nothing is downloaded), over
rolling origins, side by side with seasonal-naive and a Holt-Winters model fitted in the same
run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tinyfleet_core.errors import ConfigError, InputError
from workers.models.ssm import SSMConfig
from workers.serving.liquid import (
    LiquidConfig,
    checkpoint_path,
    load_checkpoint,
    save_checkpoint,
    set_torch_threads,
)
from workers.serving.liquid_checkpoints import SeriesModel, build_model
from workers.training.args import USER_CHECKPOINT_DIR
from workers.training.series_data import masked_pinball, series_batch
from workers.training.series_eval import (
    RealSeries,
    evaluate_anomaly,
    evaluate_forecast,
    fleet_forecast,
    real_series,
    targets,
)

__all__ = [
    "CONFIGS",
    "training_batch",
    "train",
    "train_command",
    "eval_command",
    "real_series",
    "RealSeries",
    "evaluate_forecast",
    "evaluate_anomaly",
    "fleet_forecast",
]

CONFIGS: dict[str, LiquidConfig | SSMConfig] = {
    "cfc": LiquidConfig(cell="cfc", units=64, context=72, horizon=24),
    "ltc": LiquidConfig(cell="ltc", units=32, motor=16, context=72, horizon=24, ode_unfolds=3),
    # the selective state-space tier reads a longer window (8 years of monthly data)
    "ssm": SSMConfig(d_model=32, d_inner=48, d_state=8, dt_rank=4, d_conv=4, layers=2, context=96, horizon=24),
}
REAL_SHARE = {"cfc": 0.0, "ltc": 0.0, "ssm": 0.3}
"""Share of each batch cut from real series (:mod:`workers.training.series_data`), per model."""
LR, WEIGHT_DECAY, WARMUP, GRAD_CLIP, BATCH = 3e-3, 1e-4, 100, 1.0, 128


def recipe(model: str) -> dict[str, Any]:
    """The training recipe written into a model card."""
    share = REAL_SHARE[model]
    data = "fresh synthetic series every step"
    if share:
        data += (f"; {share:.0%} of each batch cut from real statsmodels series (elec_equip, fertility, grunfeld, copper); "
                 "held out by name: the evaluation sources co2, elnino, sunspots, nile, macrodata, interest_inflation, "
                 "danish_data")
    return {"optimizer": "AdamW", "lr": LR, "weight_decay": WEIGHT_DECAY, "warmup": WARMUP, "schedule": "cosine over wall time",
            "batch": BATCH, "grad_clip": GRAD_CLIP, "loss": "pinball p10/p50/p90 (targets past a real series' end masked)",
            "data": data, "real_share": share, "trend_scaling": "window location = median of the last 3 deseasonalised "
            "values, unit = mean absolute step, targets clipped at +-100 units", "torch_threads": 1}


# ---------------------------------------------------------------------------- data


def training_batch(rng: np.random.Generator, batch: int, cfg: LiquidConfig | SSMConfig,
                   real_share: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x (B, L, F), ts (B, L, 1), y (B, H)) from fresh synthetic series (and ``real_share``
    of real windows, see :func:`workers.training.series_data.series_batch`); ``y`` in each
    window's normalised units. Half the synthetic windows are full, half shorter (left-padded)."""
    return series_batch(rng, batch, cfg.context, cfg.horizon, real_share)


@dataclass
class TrainResult:
    model: SeriesModel
    steps: int
    wall_s: float
    first_loss: float
    last_loss: float
    val_loss: float


def _val_loss(model: SeriesModel, val: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> float:
    model.eval()
    with torch.inference_mode():
        loss = float(np.mean([float(masked_pinball(model(x, ts), y)) for x, ts, y in val]))
    model.train()
    return loss


def train(cfg: LiquidConfig | SSMConfig, *, seconds: float, seed: int, batch: int = BATCH, max_steps: int | None = None,
          log_every: int = 100, log: bool = True, real_share: float = 0.0) -> TrainResult:
    """Train a fresh model for ``seconds`` of wall time (or ``max_steps``); the validation
    loss is on synthetic windows only (the same for every recipe)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    val_rng = np.random.default_rng(seed + 10_000)
    val = [training_batch(val_rng, 256, cfg) for _ in range(2)]
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    t0 = time.monotonic()
    step, first, recent = 0, math.nan, []
    while True:
        frac = (time.monotonic() - t0) / seconds
        if frac >= 1 or (max_steps is not None and step >= max_steps):
            break
        if max_steps is not None:
            frac = max(frac, step / max_steps)
        lr = LR * min(1.0, (step + 1) / WARMUP) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
        for g in opt.param_groups:
            g["lr"] = lr
        x, ts, y = training_batch(rng, batch, cfg, real_share)
        loss = masked_pinball(model(x, ts), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()
        step += 1
        recent.append(float(loss.detach()))
        if step <= 20:
            first = float(np.mean(recent))
        if log and step % log_every == 0:
            print(f"step {step} loss {np.mean(recent[-log_every:]):.4f} lr {lr:.2e} t {time.monotonic() - t0:.0f}s", file=sys.stderr, flush=True)
    model.eval()
    return TrainResult(model, step, time.monotonic() - t0, first, float(np.mean(recent[-50:])), _val_loss(model, val))


# ---------------------------------------------------------------------------- commands


def _check_args(args: argparse.Namespace) -> tuple[str, str]:
    skill = getattr(args, "skill", "series.forecast")
    model = getattr(args, "model", None) or "cfc"
    if skill not in ("series.forecast", "series.anomaly"):
        raise ConfigError(f"liquid training serves series.forecast and series.anomaly, not {skill!r}")
    if model not in CONFIGS:
        raise ConfigError(f"series models are {sorted(CONFIGS)}, not {model!r}")
    return skill, model


def train_command(args: argparse.Namespace) -> int:
    """``tinyfleet train --skill series.forecast --model cfc|ltc|ssm [--minutes M] [--seed K] [--out DIR]``."""
    skill, model = _check_args(args)
    if skill == "series.anomaly":
        print("series.anomaly scores with the series.forecast CfC checkpoint (one-step residuals); "
              "train that one: tinyfleet train --skill series.forecast --model cfc", file=sys.stderr)
        return 2
    given = [f"--{k.replace('_', '-')}" for k in ("set", "resume", "data_cache") if getattr(args, k, None)]
    if given:
        raise InputError(f"{', '.join(given)} apply to trm/hrm training; {model} trains with its fixed recipe")
    set_torch_threads()
    minutes = float(getattr(args, "minutes", None) or 10.0)
    seed = int(getattr(args, "seed", None) or 0)
    out = Path(getattr(args, "out", None) or USER_CHECKPOINT_DIR)  # the bundled dir only when --out names it
    cfg = CONFIGS[model]
    res = train(cfg, seconds=minutes * 60, seed=seed, real_share=REAL_SHARE[model])
    data = real_series()
    ev = evaluate_forecast(res.model, data)
    params = sum(p.numel() for p in res.model.parameters())
    card = {
        "skill": skill,
        "model": model,
        "params": params,
        "recipe": recipe(model),
        "seed": seed,
        "steps": res.steps,
        "wall_s": round(res.wall_s, 1),
        "hardware": f"{platform.machine()} CPU, torch threads {torch.get_num_threads()}",
        "loss": {"first": res.first_loss, "last": res.last_loss, "synthetic_val_pinball": res.val_loss},
        "accuracy": ev["summary"],
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": f"tinyfleet train --skill {skill} --model {model} --minutes {minutes:g} --seed {seed}",
    }
    path = checkpoint_path(skill, model, out)
    save_checkpoint(path, res.model, card)
    print(json.dumps({"checkpoint": str(path), "params": params, "steps": res.steps, "val_pinball": res.val_loss,
                      **ev["summary"]}, indent=2))
    return 0


def eval_command(args: argparse.Namespace) -> int:
    """``tinyfleet eval --skill series.forecast|series.anomaly [--model cfc|ltc|ssm] [--checkpoint PATH]
    [--n COUNT] [--seed K] [--json]``.

    ``--n`` caps how many real series are used (all 18 by default); ``--seed`` seeds the spikes
    injected for ``series.anomaly``. The fleet's ladders (``first_verified`` and ``best_score``)
    read the checkpoints beside ``--checkpoint`` (default: the bundled ones)."""
    skill, model = _check_args(args)
    set_torch_threads()
    given = getattr(args, "checkpoint", None)
    directory = str(Path(given).parent) if given else getattr(args, "out", None)
    net, _ = load_checkpoint(Path(given) if given else checkpoint_path("series.forecast", model, directory))
    data = real_series()
    n = getattr(args, "n", None)
    if n:
        data = data[: int(n)]
    if skill == "series.forecast":
        from workers.serving.liquid_skills import forecast_skill

        fs = forecast_skill()
        ladder = [t.name for t in fs.ladder] + ([fs.fallback.name] if fs.fallback else [])
        result: dict[str, Any] = {"skill": skill, "model": model, **evaluate_forecast(net, data)}
        result["fleet"] = fleet_forecast(data, ladder, Path(directory) if directory else None)
        result["targets"] = targets(result, result["fleet"])
    else:
        result = {"skill": skill, "model": model, **evaluate_anomaly(net, data, int(getattr(args, "seed", None) or 0))}
    if getattr(args, "json", False):
        print(json.dumps(result, indent=2))
    else:
        print(_format(result))
    return 0


def _format(result: dict[str, Any]) -> str:
    if result["skill"] == "series.anomaly":
        lines = ["scorer      precision  recall  f1     series/s"]
        for k in ("model", "classical"):
            r = result[k]
            lines.append(f"{k:<11} {r['precision']:.3f}      {r['recall']:.3f}   {r['f1']:.3f}  {r['series_per_s']:.1f}")
        return "\n".join(lines)
    lines = [f"{'series':<34} {'n':>5} {'s':>3} {'h':>3} {result['model'] + ' MASE':>10} {'naive':>7} {'HW':>7} "
             f"{'theta':>7} {'cov':>5} {'HWcov':>5}"]
    for r in result["series"]:
        lines.append(f"{r['series']:<34} {r['n']:>5} {r['season']:>3} {r['horizon']:>3} {r['mase_model']:>10.3f} "
                     f"{r['mase_naive']:>7.3f} {r['mase_classical']:>7.3f} {r['mase_theta']:>7.3f} {r['cov_model']:>5.2f} "
                     f"{r['cov_classical']:>5.2f}")
    fleet = {k: v for k, v in (result.get("fleet") or {}).items()}
    for rule in ("first_verified", "best_score"):
        if rule in fleet:
            fleet[rule] = {k: v for k, v in fleet[rule].items() if k != "per_series_ratio_vs_classical"}
    lines.append(json.dumps({**result["summary"], **result["speed"], "fleet": fleet, "targets": result.get("targets")}, indent=2))
    return "\n".join(lines)


def _main() -> int:
    p = argparse.ArgumentParser(description="train or evaluate the liquid series models")
    p.add_argument("command", choices=["train", "eval"])
    p.add_argument("--skill", default="series.forecast")
    p.add_argument("--model", default="cfc")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    try:
        return train_command(args) if args.command == "train" else eval_command(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(_main())
