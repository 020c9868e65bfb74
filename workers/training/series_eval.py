"""The series evaluation (``tinyfleet eval --skill series.forecast|series.anomaly --model M``).

Real series shipped inside statsmodels (loaded offline), 3 non-overlapping rolling origins
each, in one run:

- :func:`evaluate_forecast`: the model against seasonal naive, Holt-Winters and Theta, per
  series (MASE, mean over origins; p10-p90 coverage), mean and geometric-mean MASE and the
  per-series MASE ratio to Holt-Winters (mean and geometric mean), series/s of each;
- :func:`fleet_forecast`: what the fleet would settle on, tier by tier, as the run loop does
  (each tier answers the case and its backtest; the backtest verifier rules), under the
  ``first_verified`` ladder and under ``best_score`` (first tier and Holt-Winters compared);
- :func:`evaluate_anomaly`: the model's one-step residual scorer against the robust z-score.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workers.base import Job, Worker
from workers.kits import series
from workers.serving.liquid import FLAG_Z, Request, checkpoint_path, one_step_scores, predict
from workers.serving.liquid_checkpoints import SeriesModel

__all__ = ["ORIGINS", "RealSeries", "evaluate_anomaly", "evaluate_forecast", "fleet_forecast", "real_series", "targets"]

ORIGINS = 3


@dataclass(frozen=True)
class RealSeries:
    name: str
    values: np.ndarray
    season: int
    horizon: int


def real_series() -> list[RealSeries]:
    """The 18 evaluation series, bundled with statsmodels (loaded offline). Seasons: monthly
    12, sunspots' cycle 11, quarterly seasonally adjusted macro data 1, annual 1. Their
    sources are never trained on (:data:`workers.training.series_data.HELD_OUT_SOURCES`)."""
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


def _cases(data: list[RealSeries]) -> list[tuple[RealSeries, np.ndarray, np.ndarray]]:
    """(series, history, actual) for ``ORIGINS`` non-overlapping rolling origins per series."""
    cases = []
    for rs in data:
        for j in range(ORIGINS, 0, -1):
            cut = len(rs.values) - j * rs.horizon
            cases.append((rs, rs.values[:cut], rs.values[cut : cut + rs.horizon]))
    return cases


def _gmean(a: np.ndarray) -> float:
    return float(np.exp(np.mean(np.log(np.maximum(a, 1e-12)))))


def _inside(act: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> int:
    return int(np.sum((act >= lo[: len(act)]) & (act <= hi[: len(act)])))


def evaluate_forecast(model: SeriesModel, data: list[RealSeries], theta: bool = True) -> dict[str, Any]:
    """Per series: MASE (mean over origins) of the model, seasonal naive, Holt-Winters
    (``classical``) and Theta (unless ``theta`` is False), and p10-p90 coverage; the summary
    and series/s of each."""
    cases = _cases(data)
    t0 = time.perf_counter()
    reqs = [Request(h, np.arange(len(h)), rs.season, rs.horizon) for rs, h, _ in cases]
    preds = predict(model, reqs)
    model_batched_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for req in reqs[: min(len(cases), 30)]:
        predict(model, [req])
    model_single_s = (time.perf_counter() - t0) / min(len(cases), 30)
    timed: dict[str, float] = {}
    fits: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    baselines = (("classical", series.classical_forecast), ("theta", series.theta_forecast))[: 2 if theta else 1]
    for method, fn in baselines:
        t0 = time.perf_counter()
        fits[method] = [fn(h, rs.horizon, series.effective_season(rs.season, h)) for rs, h, _ in cases]
        timed[method] = time.perf_counter() - t0
    methods = ("model", "naive", "classical", "theta")[: 4 if theta else 3]
    rows: dict[str, dict[str, Any]] = {}
    inside = {m: 0 for m in methods if m != "naive"}
    total = 0
    for i, (rs, h, act) in enumerate(cases):
        r = rows.setdefault(rs.name, {"series": rs.name, "n": len(rs.values), "season": rs.season, "horizon": rs.horizon,
                                      **{f"mase_{m}": [] for m in methods}, **{f"cov_{m}": [] for m in inside}})
        hz = rs.horizon
        answers = {"model": preds[i], **{m: f[i] for m, f in fits.items()}}
        naive = series.seasonal_naive(h, hz, rs.season)
        r["mase_naive"].append(series.mase(act, naive, h, rs.season))
        for m, (mean, lo, hi) in answers.items():
            r[f"mase_{m}"].append(series.mase(act, mean[:hz], h, rs.season))
            k = _inside(act, lo, hi)
            r[f"cov_{m}"].append(k / hz)
            inside[m] += k
        total += hz
    table = []
    for r in rows.values():
        for key in list(r):
            if key.startswith(("mase_", "cov_")):
                r[key] = float(np.mean(r[key]))
        r["ratio_model_vs_classical"] = r["mase_model"] / r["mase_classical"]
        table.append(r)
    col = {m: np.array([r[f"mase_{m}"] for r in table]) for m in methods}
    ratio = col["model"] / col["classical"]
    hw_good = col["classical"] < col["naive"]
    n_cases = len(cases)
    summary: dict[str, Any] = {"series": len(table), "origins_per_series": ORIGINS,
                               "beats_naive": int(np.sum(col["model"] < col["naive"])),
                               "classical_beats_naive": int(np.sum(hw_good)),
                               }
    for m in methods:
        summary[f"mean_mase_{m}"] = float(col[m].mean())
        summary[f"geomean_mase_{m}"] = _gmean(col[m])
    summary |= {
        "mean_ratio_model_vs_classical": float(np.mean(ratio)),
        "geomean_ratio_model_vs_classical": _gmean(ratio),
        "max_ratio_model_vs_classical_where_classical_beats_naive": float(ratio[hw_good].max()) if hw_good.any() else math.nan,
        **{f"coverage_p10_p90_{m}": inside[m] / total for m in inside},
    }
    if theta:
        summary |= {"theta_beats_naive": int(np.sum(col["theta"] < col["naive"])),
                    "mean_ratio_model_vs_theta": float(np.mean(col["model"] / col["theta"])),
                    "geomean_ratio_model_vs_theta": _gmean(col["model"] / col["theta"])}
    speed = {
        "model_series_per_s_batched": n_cases / model_batched_s,
        "model_series_per_s_one_by_one": 1.0 / model_single_s,
        "classical_series_per_s": n_cases / timed["classical"],
        **({"theta_series_per_s": n_cases / timed["theta"]} if theta else {}),
        "speedup_batched": (n_cases / model_batched_s) / (n_cases / timed["classical"]),
        "speedup_one_by_one": (1.0 / model_single_s) / (n_cases / timed["classical"]),
    }
    return {"series": table, "summary": summary, "speed": speed}


# ---------------------------------------------------------------------------- the fleet


@dataclass
class _TierRun:
    ok: list[bool]
    score: list[float]  # backtest MASE (the verifier's score); inf when not verified
    mase: list[float]  # MASE of the answer on the truth
    inside: list[int]
    seconds: float


def _run_tier(worker: Worker, jobs: list[Job], cases: list[tuple[RealSeries, np.ndarray, np.ndarray]]) -> _TierRun:
    """Each case and its backtest answered by ``worker`` in one batch, ruled by the verifier."""
    verifier = series.ForecastBacktestVerifier()
    t0 = time.perf_counter()
    worker.setup("cpu")
    atts = worker.solve_batch(jobs + [Job(series.backtest_input(j.input)) for j in jobs])
    seconds = time.perf_counter() - t0
    main, held = atts[: len(jobs)], atts[len(jobs) :]
    run = _TierRun([False] * len(jobs), [math.inf] * len(jobs), [math.inf] * len(jobs), [0] * len(jobs), seconds)
    pairs = [(i, series.ForecastOutput.model_validate(a.output)) for i, a in enumerate(main) if a.output is not None]
    items = [(jobs[i].input, o, series.ForecastOutput.model_validate(held[i].output) if held[i].output is not None else None)
             for i, o in pairs]
    for (i, out), v in zip(pairs, verifier.check_holdout_batch(items), strict=True):
        rs, hist, act = cases[i]
        run.ok[i] = v.ok
        run.score[i] = float(v.score) if v.ok and v.score is not None else math.inf
        run.mase[i] = series.mase(act, np.asarray(out.mean), hist, rs.season)
        run.inside[i] = _inside(act, np.asarray(out.p10), np.asarray(out.p90))
    return run


def _ladder(runs: dict[str, _TierRun], order: list[str], n: int, compare: str | None) -> list[str]:
    """The tier each case settles at ('failed' when none verifies): in ``order``, or, with
    ``compare``, the first tier and ``compare`` together (the better backtest score; ties:
    the first tier), then the rest in order."""
    out = []
    for i in range(n):
        tier = "failed"
        rest = order
        if compare is not None and order and compare in runs:
            first = order[0]
            cands = [t for t in (first, compare) if runs[t].ok[i]]
            if cands:
                tier = min(cands, key=lambda t: runs[t].score[i])
            rest = [t for t in order[1:] if t != compare]
        if tier == "failed":
            tier = next((t for t in rest if runs[t].ok[i]), "failed")
        out.append(tier)
    return out


def fleet_forecast(data: list[RealSeries], ladder: list[str], directory: Path | None = None) -> dict[str, Any]:
    """Run each tier of ``ladder`` (names: cfc, ltc, ssm, classical; the last one is the
    fallback) on every (series, origin) case as the fleet would and report, for
    ``first_verified`` and ``best_score``, where cases settle, the settled answers' per-series
    MASE ratio to Holt-Winters (a case no tier passes counts with Holt-Winters' answer, though
    the fleet would report that step failed), their coverage and the tiers' seconds."""
    from workers.serving import liquid_workers as lw

    classes: dict[str, type[Worker]] = {"cfc": lw.CfCForecaster, "ltc": lw.LTCForecaster, "ssm": lw.SSMForecaster,
                                        "classical": lw.ClassicalForecaster}
    cases = _cases(data)
    jobs = [Job(series.ForecastInput(values=h.tolist(), horizon=rs.horizon, season=rs.season)) for rs, h, _ in cases]
    runs: dict[str, _TierRun] = {}
    for tier in ladder:
        kind = getattr(classes[tier], "model_kind", None)
        if kind is not None and not checkpoint_path("series.forecast", kind, directory).exists():
            continue
        worker = classes[tier]()
        if kind is not None:
            worker.checkpoint_dir = directory  # type: ignore[attr-defined]
        runs[tier] = _run_tier(worker, jobs, cases)
    order = [t for t in ladder if t in runs]
    hw = runs["classical"]
    result: dict[str, Any] = {"cases": len(jobs), "ladder": order,
                              "accepted": {t: sum(r.ok) / len(jobs) for t, r in runs.items()},
                              "tier_seconds": {t: r.seconds for t, r in runs.items()}}
    for rule, compare in (("first_verified", None), ("best_score", "classical")):
        settled = _ladder(runs, order, len(jobs), compare)
        per: dict[str, list[float]] = {}
        ref: dict[str, list[float]] = {}
        naive: dict[str, list[float]] = {}
        inside = total = 0
        for i, tier in enumerate(settled):
            rs, hist, act = cases[i]
            use = runs[tier if tier != "failed" else "classical"]
            per.setdefault(rs.name, []).append(use.mase[i])
            ref.setdefault(rs.name, []).append(hw.mase[i])
            naive.setdefault(rs.name, []).append(series.mase(act, series.seasonal_naive(hist, rs.horizon, rs.season), hist, rs.season))
            inside += use.inside[i]
            total += len(act)
        names = list(per)
        ratios = np.array([np.mean(per[k]) / np.mean(ref[k]) for k in names])
        hw_good = np.array([np.mean(ref[k]) < np.mean(naive[k]) for k in names])
        result[rule] = {
            "settled_at": {t: settled.count(t) for t in [*order, "failed"]},
            "mean_mase": float(np.mean([np.mean(per[k]) for k in names])),
            "mean_ratio_vs_classical": float(np.mean(ratios)),
            "geomean_ratio_vs_classical": _gmean(ratios),
            "max_ratio_vs_classical_where_classical_beats_naive": float(ratios[hw_good].max()) if hw_good.any() else math.nan,
            "coverage_p10_p90": inside / total,
            "per_series_ratio_vs_classical": {k: float(r) for k, r in zip(names, ratios, strict=True)},
        }
    return result


def targets(ev: dict[str, Any], fleet: dict[str, Any] | None) -> dict[str, Any]:
    """Issue 20's targets, each with the measured number and whether it is met."""
    s, sp = ev["summary"], ev["speed"]
    out: dict[str, Any] = {
        "model_geomean_ratio_vs_classical<=1.05": {"value": s["geomean_ratio_model_vs_classical"],
                                                    "met": s["geomean_ratio_model_vs_classical"] <= 1.05},
        "model_speedup_batched>=10": {"value": sp["speedup_batched"], "met": sp["speedup_batched"] >= 10},
        "model_coverage_p10_p90_in_75_85%": {"value": s["coverage_p10_p90_model"],
                                             "met": 0.75 <= s["coverage_p10_p90_model"] <= 0.85},
    }
    if fleet is not None:
        for rule in ("first_verified", "best_score"):
            f = fleet[rule]
            out[f"fleet_{rule}_mean_ratio_vs_classical<=1.00"] = {"value": f["mean_ratio_vs_classical"],
                                                                  "met": f["mean_ratio_vs_classical"] <= 1.0}
            worst = f["max_ratio_vs_classical_where_classical_beats_naive"]
            out[f"fleet_{rule}_max_ratio_where_classical_beats_naive<=1.5"] = {"value": worst, "met": worst <= 1.5}
            out[f"fleet_{rule}_coverage_p10_p90_in_75_85%"] = {"value": f["coverage_p10_p90"],
                                                              "met": 0.75 <= f["coverage_p10_p90"] <= 0.85}
    return out


def evaluate_anomaly(model: SeriesModel, data: list[RealSeries], seed: int) -> dict[str, Any]:
    """Precision/recall/F1 of flags on real series with injected spikes (1% of points, 6-12x
    the one-step noise), for the model's one-step scorer and the classical robust z-score,
    plus series/s."""
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
