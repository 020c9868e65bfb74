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
from workers.base import Job
from workers.kits import series
from workers.serving.liquid import (
    FLAG_Z,
    LiquidConfig,
    LiquidForecaster,
    Request,
    Window,
    checkpoint_path,
    load_checkpoint,
    make_window,
    one_step_scores,
    pinball_loss,
    predict,
    save_checkpoint,
    set_torch_threads,
)
from workers.training.args import USER_CHECKPOINT_DIR

__all__ = [
    "CONFIGS",
    "training_batch",
    "train",
    "train_command",
    "eval_command",
    "real_series",
    "evaluate_forecast",
    "evaluate_anomaly",
]

CONFIGS = {
    "cfc": LiquidConfig(cell="cfc", units=64, context=72, horizon=24),
    "ltc": LiquidConfig(cell="ltc", units=32, motor=16, context=72, horizon=24, ode_unfolds=3),
}
LR, WEIGHT_DECAY, WARMUP, GRAD_CLIP, BATCH = 3e-3, 1e-4, 100, 1.0, 128
RECIPE = {"optimizer": "AdamW", "lr": LR, "weight_decay": WEIGHT_DECAY, "warmup": WARMUP, "schedule": "cosine over wall time",
          "batch": BATCH, "grad_clip": GRAD_CLIP, "loss": "pinball p10/p50/p90", "data": "fresh synthetic series every step",
          "torch_threads": 1}


# ---------------------------------------------------------------------------- data


def training_batch(rng: np.random.Generator, batch: int, cfg: LiquidConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x (B, L, F), ts (B, L, 1), y (B, H)) from fresh synthetic series; ``y`` in each
    window's normalised units. Half the windows are full, half shorter (left-padded)."""
    wins: list[Window] = []
    ys = np.zeros((batch, cfg.horizon), dtype=np.float32)
    for b in range(batch):
        n_ctx = cfg.context if rng.random() < 0.5 else int(rng.integers(12, cfg.context + 1))
        s = series.generate_series(rng, n_ctx + cfg.horizon, regular_tail=cfg.horizon)
        k, _ = series.grid_index(s.timestamps.tolist(), len(s.values))
        hist = s.values[:n_ctx]
        given = s.season if rng.random() < 0.85 else None
        season = series.effective_season(given, hist)
        w = make_window(hist, k[:n_ctx], season, cfg.horizon, cfg.context)
        wins.append(w)
        ys[b] = np.clip((s.values[n_ctx:] - w.loc - w.future_season) / w.scale, -100, 100)
    x = torch.from_numpy(np.stack([w.x for w in wins]))
    ts = torch.from_numpy(np.stack([w.ts for w in wins]))[..., None]
    return x, ts, torch.from_numpy(ys)


@dataclass
class TrainResult:
    model: LiquidForecaster
    steps: int
    wall_s: float
    first_loss: float
    last_loss: float
    val_loss: float


def _val_loss(model: LiquidForecaster, val: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> float:
    model.eval()
    with torch.inference_mode():
        loss = float(np.mean([float(pinball_loss(model(x, ts), y)) for x, ts, y in val]))
    model.train()
    return loss


def train(cfg: LiquidConfig, *, seconds: float, seed: int, batch: int = BATCH, max_steps: int | None = None,
          log_every: int = 100, log: bool = True) -> TrainResult:
    """Train a fresh model for ``seconds`` of wall time (or ``max_steps``)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    val_rng = np.random.default_rng(seed + 10_000)
    val = [training_batch(val_rng, 256, cfg) for _ in range(2)]
    model = LiquidForecaster(cfg)
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
        x, ts, y = training_batch(rng, batch, cfg)
        loss = pinball_loss(model(x, ts), y)
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


# ---------------------------------------------------------------------------- real series


@dataclass(frozen=True)
class RealSeries:
    name: str
    values: np.ndarray
    season: int
    horizon: int


def real_series() -> list[RealSeries]:
    """Time series bundled with statsmodels (loaded offline). Seasons: monthly 12, sunspots'
    cycle 11, quarterly seasonally adjusted macro data 1, annual 1."""
    import statsmodels.api as sm

    out: list[RealSeries] = []
    co2 = sm.datasets.co2.load_pandas().data["co2"].resample("MS").mean().interpolate()
    out.append(RealSeries("co2 (monthly)", co2.to_numpy(float), 12, 12))
    el = sm.datasets.elnino.load_pandas().data.iloc[:, 1:].to_numpy(float).ravel()
    out.append(RealSeries("elnino (monthly)", el, 12, 12))
    sun = sm.datasets.sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(float)
    out.append(RealSeries("sunspots (annual)", sun, 11, 10))
    nile = sm.datasets.nile.load_pandas().data["volume"].to_numpy(float)
    out.append(RealSeries("nile (annual)", nile, 1, 10))
    macro = sm.datasets.macrodata.load_pandas().data
    for col in ("realgdp", "realcons", "realinv", "cpi", "m1", "tbilrate", "unemp", "infl"):
        out.append(RealSeries(f"macro.{col} (quarterly)", macro[col].to_numpy(float), 1, 8))
    ii = sm.datasets.interest_inflation.load_pandas().data
    for col in ("Dp", "R"):
        out.append(RealSeries(f"interest_inflation.{col} (quarterly)", ii[col].to_numpy(float), 4, 8))
    dan = sm.datasets.danish_data.load_pandas().data
    for col in ("lrm", "lry", "ibo", "ide"):
        out.append(RealSeries(f"danish.{col} (quarterly)", dan[col].to_numpy(float), 4, 8))
    return out


ORIGINS = 3


def _cases(data: list[RealSeries]) -> list[tuple[RealSeries, np.ndarray, np.ndarray]]:
    """(series, history, actual) for ``ORIGINS`` non-overlapping rolling origins per series."""
    cases = []
    for rs in data:
        for j in range(ORIGINS, 0, -1):
            cut = len(rs.values) - j * rs.horizon
            cases.append((rs, rs.values[:cut], rs.values[cut : cut + rs.horizon]))
    return cases


def evaluate_forecast(model: LiquidForecaster, data: list[RealSeries]) -> dict[str, Any]:
    """MASE per series (mean over origins) for the model, seasonal-naive and Holt-Winters;
    p10-p90 coverage; series/s of each (model batched, and one series per call)."""
    cases = _cases(data)
    t0 = time.perf_counter()
    reqs = [Request(h, np.arange(len(h)), rs.season, rs.horizon) for rs, h, _ in cases]
    preds = predict(model, reqs)
    model_batched_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for req in reqs[: min(len(cases), 30)]:
        predict(model, [req])
    model_single_s = (time.perf_counter() - t0) / min(len(cases), 30)
    classical: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    t0 = time.perf_counter()
    for rs, h, _ in cases:
        classical.append(series.classical_forecast(h, rs.horizon, series.effective_season(rs.season, h)))
    classical_s = time.perf_counter() - t0
    rows: dict[str, dict[str, Any]] = {}
    inside_m, inside_c, total = 0, 0, 0
    for (rs, h, act), (m, lo, hi), (cm, clo, chi) in zip(cases, preds, classical, strict=True):
        r = rows.setdefault(rs.name, {"series": rs.name, "n": len(rs.values), "season": rs.season, "horizon": rs.horizon,
                                      "mase_model": [], "mase_naive": [], "mase_classical": []})
        hz = rs.horizon
        r["mase_model"].append(series.mase(act, m[:hz], h, rs.season))
        r["mase_naive"].append(series.mase(act, series.seasonal_naive(h, hz, rs.season), h, rs.season))
        r["mase_classical"].append(series.mase(act, cm, h, rs.season))
        inside_m += int(np.sum((act >= lo[:hz]) & (act <= hi[:hz])))
        inside_c += int(np.sum((act >= clo) & (act <= chi)))
        total += hz
    table = []
    for r in rows.values():
        for key in ("mase_model", "mase_naive", "mase_classical"):
            r[key] = float(np.mean(r[key]))
        table.append(r)
    mm = np.array([r["mase_model"] for r in table])
    mn = np.array([r["mase_naive"] for r in table])
    mc = np.array([r["mase_classical"] for r in table])
    n_cases = len(cases)
    return {
        "series": table,
        "summary": {
            "series": len(table),
            "origins_per_series": ORIGINS,
            "beats_naive": int(np.sum(mm < mn)),
            "classical_beats_naive": int(np.sum(mc < mn)),
            "mean_mase_model": float(mm.mean()),
            "mean_mase_naive": float(mn.mean()),
            "mean_mase_classical": float(mc.mean()),
            "mean_ratio_model_vs_classical": float(np.mean(mm / mc)),
            "geomean_ratio_model_vs_classical": float(np.exp(np.mean(np.log(mm / mc)))),
            "coverage_p10_p90_model": inside_m / total,
            "coverage_p10_p90_classical": inside_c / total,
        },
        "speed": {
            "model_series_per_s_batched": n_cases / model_batched_s,
            "model_series_per_s_one_by_one": 1.0 / model_single_s,
            "classical_series_per_s": n_cases / classical_s,
            "speedup_batched": (n_cases / model_batched_s) / (n_cases / classical_s),
            "speedup_one_by_one": (1.0 / model_single_s) / (n_cases / classical_s),
        },
    }


def verifier_pass_rates(data: list[RealSeries], directory: Path | None = None) -> dict[str, Any]:
    """Run each tier's worker on every (series, origin) case, as the fleet would, and report
    the share the backtest verifier accepts, where the ladder cfc -> ltc -> classical settles
    each case, and the MASE of the settled answers (a case no tier passes counts with the
    classical answer, though the fleet would report that step failed)."""
    from workers.base import Worker
    from workers.serving.liquid import CfCForecaster, ClassicalForecaster, LTCForecaster

    cases = _cases(data)
    jobs = [Job(series.ForecastInput(values=h.tolist(), horizon=rs.horizon, season=rs.season)) for rs, h, _ in cases]
    verifier = series.ForecastBacktestVerifier()
    workers: list[tuple[str, Worker]] = []
    for tier, cls in (("cfc", CfCForecaster), ("ltc", LTCForecaster)):
        if checkpoint_path("series.forecast", cls.model_kind, directory).exists():
            w = cls()
            w.checkpoint_dir = directory
            workers.append((tier, w))
    workers.append(("classical", ClassicalForecaster()))
    ok: dict[str, list[bool]] = {}
    mase: dict[str, list[float]] = {}
    for tier, worker in workers:
        worker.setup("cpu")
        atts = worker.solve_batch(jobs)
        # the verifier's backtest: the same worker forecasts each history minus its last window
        held = worker.solve_batch([Job(series.backtest_input(j.input)) for j in jobs])
        flags = [False] * len(jobs)
        errs = [math.inf] * len(jobs)
        pairs = [(i, series.ForecastOutput.model_validate(a.output)) for i, a in enumerate(atts) if a.output is not None]
        items = [
            (jobs[i].input, o, series.ForecastOutput.model_validate(held[i].output) if held[i].output is not None else None)
            for i, o in pairs
        ]
        for (i, out), v in zip(pairs, verifier.check_holdout_batch(items), strict=True):
            flags[i] = v.ok
            rs, hist, act = cases[i]
            errs[i] = series.mase(act, np.asarray(out.mean), hist, rs.season)
        ok[tier], mase[tier] = flags, errs
    settled = {t: 0 for t in ok} | {"failed": 0}
    ladder: dict[str, list[float]] = {}
    classical: dict[str, list[float]] = {}
    for i in range(len(jobs)):
        tier = next((t for t in ok if ok[t][i]), "failed")
        settled[tier] += 1
        name = cases[i][0].name
        ladder.setdefault(name, []).append(mase[tier if tier != "failed" else "classical"][i])
        classical.setdefault(name, []).append(mase["classical"][i])
    ratios = [float(np.mean(ladder[k]) / np.mean(classical[k])) for k in ladder]
    return {
        "cases": len(jobs),
        "accepted": {t: sum(v) / len(jobs) for t, v in ok.items()},
        "settled_at": settled,
        "ladder_mean_mase": float(np.mean([np.mean(v) for v in ladder.values()])),
        "ladder_mean_ratio_vs_classical": float(np.mean(ratios)),
        "ladder_geomean_ratio_vs_classical": float(np.exp(np.mean(np.log(ratios)))),
    }


def evaluate_anomaly(model: LiquidForecaster, data: list[RealSeries], seed: int) -> dict[str, Any]:
    """Precision/recall/F1 of flags on real series with injected spikes (1% of points, 6-12x
    the one-step noise), for the CfC scorer and the classical robust z-score, plus series/s."""
    rng = np.random.default_rng(seed)
    cases = []
    for rs in data:
        s = series.inject_anomalies(rng, series.Synth(rs.values, np.arange(len(rs.values), dtype=float), rs.season, np.zeros(0)), rate=0.01)
        cases.append((rs, s))
    res: dict[str, Any] = {}
    for kind in ("model", "classical"):
        tp = fp = fn = 0
        t0 = time.perf_counter()
        for rs, s in cases:
            k = np.arange(len(s.values))
            if kind == "model":
                scores, _ = one_step_scores(model, s.values, k, series.effective_season(rs.season, s.values))
            else:
                scores = series.classical_anomaly_scores(s.values, k, series.effective_season(rs.season, s.values))
            flagged = set(np.flatnonzero(scores > FLAG_Z).tolist())
            truth = set(s.anomalies.tolist())
            tp += len(flagged & truth)
            fp += len(flagged - truth)
            fn += len(truth - flagged)
        secs = time.perf_counter() - t0
        p = tp / max(1, tp + fp)
        r = tp / max(1, tp + fn)
        res[kind] = {"precision": p, "recall": r, "f1": 2 * p * r / max(1e-12, p + r), "series_per_s": len(cases) / secs,
                     "true_anomalies": tp + fn}
    return res


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
    """``tinyfleet train --skill series.forecast --model cfc|ltc [--minutes M] [--seed K] [--out DIR]``."""
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
    res = train(cfg, seconds=minutes * 60, seed=seed)
    data = real_series()
    ev = evaluate_forecast(res.model, data)
    params = sum(p.numel() for p in res.model.parameters())
    card = {
        "skill": skill,
        "model": model,
        "params": params,
        "recipe": RECIPE,
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
    """``tinyfleet eval --skill series.forecast|series.anomaly [--model cfc|ltc] [--checkpoint PATH]
    [--n COUNT] [--seed K] [--json]``.

    ``--n`` caps how many real series are used (all 18 by default); ``--seed`` seeds the spikes
    injected for ``series.anomaly``. The verifier/ladder rates read the checkpoints beside
    ``--checkpoint`` (default: the bundled ones)."""
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
        result: dict[str, Any] = {"skill": skill, "model": model, **evaluate_forecast(net, data)}
        result["verifier"] = verifier_pass_rates(data, Path(directory) if directory else None)
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
    lines = [f"{'series':<34} {'n':>5} {'s':>3} {'h':>3} {result['model'] + ' MASE':>10} {'naive':>7} {'classical':>9}"]
    for r in result["series"]:
        lines.append(f"{r['series']:<34} {r['n']:>5} {r['season']:>3} {r['horizon']:>3} {r['mase_model']:>10.3f} "
                     f"{r['mase_naive']:>7.3f} {r['mase_classical']:>9.3f}")
    lines.append(json.dumps({**result["summary"], **result["speed"], "verifier": result.get("verifier")}, indent=2))
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
