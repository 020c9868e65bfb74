"""Liquid-network workers (CfC, LTC from ``ncps``) for ``series.forecast`` and ``series.anomaly``,
their checkpoints, and the series skills with their ladders.

The model (nanoGPT-style, one file): a window of the last ``context`` values is deseasonalised
with median seasonal indices, normalised per series (location = median of the last 3 values,
scale = mean absolute step), and read by a CfC or LTC cell whose ``timespans`` are the sample
gaps in units of the median step (irregular series). A linear head maps the last state (plus
a linear skip from the normalised window, a residual path) to ``horizon`` x 3 quantiles (p10, p50, p90), kept ordered by construction; training minimises the
pinball loss. Outputs are mapped back through scale, location and seasonal indices.

Checkpoints: ``workers/checkpoints/<skill>-<model>.safetensors`` (weights, float32) plus a
``.json`` model card (config, recipe, seed, steps, wall time, measured accuracy, date). The
anomaly scorer reuses the CfC forecast checkpoint: its scores are one-step forecast residuals.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from tinyfleet_core.errors import ConfigError
from tinyfleet_core.models import Attempt
from workers.base import Job, PoolOptions, Skill, Tier, Worker
from workers.kits import series

__all__ = [
    "CHECKPOINT_DIR",
    "LiquidConfig",
    "LiquidForecaster",
    "Window",
    "make_window",
    "checkpoint_path",
    "save_checkpoint",
    "load_checkpoint",
    "set_torch_threads",
    "forecast_batch",
    "Request",
    "predict",
    "predict_tracked",
    "Forecast",
    "one_step_scores",
    "CfCForecaster",
    "LTCForecaster",
    "ClassicalForecaster",
    "CfCAnomalyScorer",
    "ClassicalAnomalyScorer",
    "series_skills",
]

CHECKPOINT_DIR = Path(__file__).resolve().parents[1] / "checkpoints"  # workers/checkpoints
QUANTILES = (0.1, 0.5, 0.9)
N_FEATURES = 2  # normalised value, valid-mask
FLAG_Z = 4.5
"""Anomaly flag threshold on the z-like score (both scorers)."""

F = np.ndarray


# ---------------------------------------------------------------------------- model


@dataclass(frozen=True)
class LiquidConfig:
    """Architecture of a liquid forecaster."""

    cell: Literal["cfc", "ltc"] = "cfc"
    units: int = 64
    motor: int = 16  # AutoNCP output neurons (ltc)
    context: int = 72
    horizon: int = 24
    ode_unfolds: int = 3  # ltc


class LiquidForecaster(nn.Module):
    """CfC (fully connected, ``units`` neurons) or LTC (``AutoNCP(units, motor)`` wiring) cell
    over a window; a linear head on its last state plus a linear skip from the normalised
    window give ordered quantiles."""

    def __init__(self, cfg: LiquidConfig) -> None:
        super().__init__()
        from ncps.torch import LTC, CfC
        from ncps.wirings import AutoNCP

        self.cfg = cfg
        self.rnn: Any
        if cfg.cell == "cfc":
            self.rnn = CfC(N_FEATURES, cfg.units, return_sequences=False)
            out_dim = cfg.units
        else:
            self.rnn = LTC(N_FEATURES, AutoNCP(cfg.units, cfg.motor), return_sequences=False, ode_unfolds=cfg.ode_unfolds)
            out_dim = cfg.motor
        self.head = nn.Linear(out_dim, cfg.horizon * 3)
        # linear skip from the normalised window (a residual path; starts at zero)
        self.skip = nn.Linear(cfg.context, cfg.horizon * 3)
        nn.init.zeros_(self.skip.weight)
        nn.init.zeros_(self.skip.bias)

    def forward(self, x: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        # x: (B, L, N_FEATURES), ts: (B, L, 1) -> (B, H, 3) quantiles p10 <= p50 <= p90
        # ncps' own loop squeezes timespans to (B,), which breaks broadcasting; step the cell here.
        b, steps, _ = x.shape
        h = torch.zeros(b, int(self.rnn.state_size), dtype=x.dtype, device=x.device)
        out = h
        for t in range(steps):
            out, h = self.rnn.rnn_cell(x[:, t], h, ts[:, t])
        q = (self.head(out) + self.skip(x[..., 0])).view(b, self.cfg.horizon, 3)
        mid = q[..., 1]
        lo = mid - nn.functional.softplus(q[..., 0])
        hi = mid + nn.functional.softplus(q[..., 2])
        return torch.stack([lo, mid, hi], dim=-1)


def pinball_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean pinball loss of (B, H, 3) quantile predictions against (B, H) targets."""
    qs = torch.tensor(QUANTILES, dtype=pred.dtype, device=pred.device)
    diff = target.unsqueeze(-1) - pred
    return torch.maximum(qs * diff, (qs - 1) * diff).mean()


# ---------------------------------------------------------------------------- windows


@dataclass(frozen=True)
class Window:
    """One model input and what maps its output back: features (L, F), timespans (L,),
    location, scale and the seasonal offsets of the ``horizon`` future steps."""

    x: F
    ts: F
    loc: float
    scale: float
    future_season: F


def make_window(values: F, k: F, season: int, horizon: int, context: int, seas: F | None = None) -> Window:
    """Build the model input from a history ``values`` at grid steps ``k`` (see
    :func:`series.grid_index`). ``seas`` are precomputed seasonal indices (else estimated
    from ``values``). Shorter histories are left-padded with masked zeros."""
    v = np.asarray(values, dtype=float)
    k = np.asarray(k)
    if seas is None:
        seas = series.seasonal_indices(v, k, season) if season > 1 else np.zeros(1)
    s = len(seas)
    d = v - seas[k % s]
    ctx, kc = d[-context:], k[-context:]
    loc = float(sorted(ctx[-3:].tolist())[len(ctx[-3:]) // 2]) if len(ctx) != 2 else float(ctx.mean())
    steps = np.abs(np.diff(ctx))
    scale = float(steps.mean()) if steps.size else 0.0
    if not scale > 1e-12 * (1.0 + abs(loc)):
        scale = float(np.std(ctx)) or max(abs(loc), 1.0) * 1e-3
    n = len(ctx)
    x = np.zeros((context, N_FEATURES), dtype=np.float32)
    x[context - n :, 0] = np.clip((ctx - loc) / scale / 8.0, -10, 10)
    x[context - n :, 1] = 1.0
    ts = np.ones(context, dtype=np.float32)
    if n > 1:
        ts[context - n + 1 :] = np.clip(np.diff(kc), 1, 10)
    future = seas[(int(k[-1]) + np.arange(1, horizon + 1)) % s]
    return Window(x=x, ts=ts, loc=loc, scale=scale, future_season=future)


def _stack(windows: Sequence[Window]) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.stack([w.x for w in windows]))
    ts = torch.from_numpy(np.stack([w.ts for w in windows]))[..., None]
    return x, ts


def forecast_batch(model: LiquidForecaster, windows: Sequence[Window], chunk: int = 1024) -> list[tuple[F, F, F]]:
    """Run ``model`` on windows; return (p50, p10, p90) per window in the series' units,
    each of the model's full horizon."""
    out: list[tuple[F, F, F]] = []
    with torch.inference_mode():
        for i in range(0, len(windows), chunk):
            part = windows[i : i + chunk]
            x, ts = _stack(part)
            q = model(x, ts).numpy().astype(float)  # (B, H, 3)
            for w, qi in zip(part, q, strict=True):
                lo, mid, hi = (w.loc + w.scale * qi[:, j] + w.future_season for j in range(3))
                out.append((mid, lo, hi))
    return out


CALIB_ORIGINS = 4


@dataclass(frozen=True)
class Request:
    """One forecast to make: a history at grid steps ``k``, the given season (or None) and a horizon."""

    values: F
    k: F
    season: int | None
    horizon: int


@dataclass(frozen=True)
class Forecast:
    """One calibrated forecast, and the model's track record on its own history: the mean
    absolute error of its forecasts from the calibration origins, and seasonal-naive's from
    the same origins (both NaN when the history is too short for an origin)."""

    mean: F
    p10: F
    p90: F
    track_mae: float
    naive_mae: float


def predict(model: LiquidForecaster, requests: Sequence[Request]) -> list[tuple[F, F, F]]:
    """Calibrated forecasts (mean, p10, p90), ``horizon`` steps each, in one batched pass
    (see :func:`predict_tracked`)."""
    return [(f.mean, f.p10, f.p90) for f in predict_tracked(model, requests)]


def predict_tracked(model: LiquidForecaster, requests: Sequence[Request]) -> list[Forecast]:
    """Calibrated forecasts, ``horizon`` steps each, in one batched pass, with a track record.

    Per-series interval calibration (split-conformal on the series' own history): besides
    the forecast window, up to ``CALIB_ORIGINS`` earlier origins inside the history are
    forecast; the 80% quantile of how far their actuals fall outside the p10/p90 band, in
    units of the band's half-widths, rescales the band (clipped to 0.6-5x). The same
    origins' errors, against seasonal-naive's, are the track record."""
    cfg = model.cfg
    windows: list[Window] = []
    spans: list[tuple[int, list[tuple[int, int]]]] = []  # (main index, [(calib index, origin)])
    for r in requests:
        n = len(r.values)
        s = series.effective_season(r.season, r.values)
        main = len(windows)
        windows.append(make_window(r.values, r.k, s, cfg.horizon, cfg.context))
        calib = []
        stride = max(1, r.horizon // 2)
        for j in range(CALIB_ORIGINS):
            o = n - r.horizon - j * stride
            if o < series.MIN_VALUES:
                break
            hist = r.values[:o]
            calib.append((len(windows), o))
            windows.append(make_window(hist, r.k[:o], series.effective_season(r.season, hist), cfg.horizon, cfg.context))
        spans.append((main, calib))
    preds = forecast_batch(model, windows)
    out = []
    for r, (main, calib) in zip(requests, spans, strict=True):
        m, lo, hi = (a[: r.horizon] for a in preds[main])
        u: list[F] = []
        errs: list[F] = []
        naive_errs: list[F] = []
        for ci, o in calib:
            cm, clo, chi = (a[: r.horizon] for a in preds[ci])
            act = r.values[o : o + r.horizon]
            hz = len(act)
            up = np.maximum(chi[:hz] - cm[:hz], 1e-12)
            down = np.maximum(cm[:hz] - clo[:hz], 1e-12)
            u.append(np.where(act >= cm[:hz], (act - cm[:hz]) / up, (cm[:hz] - act) / down))
            errs.append(np.abs(act - cm[:hz]))
            hist = r.values[:o]
            naive_errs.append(np.abs(act - seasonal_naive_of(hist, hz, r.season)))
        f = float(np.clip(np.quantile(np.concatenate(u), 0.8), 0.6, 5.0)) if u else 1.0
        track = float(np.mean(np.concatenate(errs))) if errs else math.nan
        naive = float(np.mean(np.concatenate(naive_errs))) if naive_errs else math.nan
        out.append(Forecast(m, m - f * (m - lo), m + f * (hi - m), track, naive))
    return out


def seasonal_naive_of(history: F, horizon: int, season: int | None) -> F:
    """Seasonal-naive forecast of ``history`` with the season a model would use."""
    return series.seasonal_naive(history, horizon, series.effective_season(season, history))


# ---------------------------------------------------------------------------- checkpoints


def checkpoint_path(skill: str, model: str, directory: Path | str | None = None) -> Path:
    return Path(directory or CHECKPOINT_DIR) / f"{skill}-{model}.safetensors"


def save_checkpoint(path: Path, model: LiquidForecaster, card: dict[str, Any]) -> None:
    """Write weights (safetensors) and the model card (``.json`` beside them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().float() for k, v in model.state_dict().items()}
    card = {**card, "config": asdict(model.cfg)}
    save_file(state, str(path), metadata={"config": json.dumps(asdict(model.cfg))})
    path.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")


def load_checkpoint(path: Path | str) -> tuple[LiquidForecaster, dict[str, Any]]:
    """Load weights and card; ConfigError naming the file when anything is wrong."""
    path = Path(path)
    fix = "re-train it with `tinyfleet train --skill series.forecast --model cfc|ltc`"
    if not path.exists():
        raise ConfigError(f"checkpoint {path} does not exist; {fix}")
    card_path = path.with_suffix(".json")
    try:
        card = json.loads(card_path.read_text())
        cfg = LiquidConfig(**card["config"])
    except FileNotFoundError:
        raise ConfigError(f"checkpoint {path} has no model card {card_path.name}; {fix}") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ConfigError(f"model card {card_path} is unreadable ({type(e).__name__}: {e}); {fix}") from None
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ConfigError(f"checkpoint {path} is not a readable safetensors file ({e}); {fix}") from None
    model = LiquidForecaster(cfg)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[:2]
        raise ConfigError(f"checkpoint {path} does not match its model card's config ({' '.join(first)}); {fix}") from None
    model.eval()
    return model, card


def set_torch_threads() -> int:
    """Set torch's intra-op threads: 1 unless TINYFLEET_TORCH_THREADS says otherwise."""
    raw = os.environ.get("TINYFLEET_TORCH_THREADS", "1")
    try:
        n = int(raw)
    except ValueError:
        raise ConfigError(f"TINYFLEET_TORCH_THREADS must be a positive integer, got {raw!r}") from None
    if n < 1:
        raise ConfigError(f"TINYFLEET_TORCH_THREADS must be a positive integer, got {raw!r}")
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


# ---------------------------------------------------------------------------- forecast workers


def _confidence(model_mae: float, naive_mae: float) -> float:
    """1 when the model's error is half seasonal-naive's, 0.5 at parity, 0 at 1.5x; 0.5 when
    there is no track record to judge by."""
    if math.isnan(model_mae) or math.isnan(naive_mae):
        return 0.5
    if naive_mae <= 0:
        return 1.0 if model_mae <= 0 else 0.0
    return float(np.clip(1.5 - model_mae / naive_mae, 0.0, 1.0))


class _LiquidForecastWorker(Worker):
    """Forecasts a batch in one pass. It answers exactly what it is asked: the verifier's
    backtest arrives as a job of its own (the history with the last window cut off), so
    this worker never holds the values its forecast is scored on. Its confidence is its
    track record on its own history (the calibration origins of :func:`predict_tracked`)."""

    skill = "series.forecast"
    model_kind: ClassVar[str] = "cfc"
    checkpoint_dir: Path | None = None

    def __init__(self) -> None:
        self._model: LiquidForecaster | None = None
        self._card: dict[str, Any] = {}

    def setup(self, device: str = "cpu") -> None:
        super().setup(device)
        set_torch_threads()
        self._model, self._card = load_checkpoint(checkpoint_path(self.skill, self.model_kind, self.checkpoint_dir))

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        if self._model is None:
            self.setup(self.device)
        assert self._model is not None
        t0 = time.perf_counter()
        cfg = self._model.cfg
        requests: list[Request] = []
        refusals: list[str | None] = []
        for job in jobs:
            inp = job.input
            assert isinstance(inp, series.ForecastInput)
            if inp.horizon > cfg.horizon:
                refusals.append(f"horizon {inp.horizon} is above the model's trained {cfg.horizon} steps")
                continue
            x = np.asarray(inp.values, dtype=float)
            k, _ = series.grid_index(inp.timestamps, len(x))
            requests.append(Request(x, k, inp.season, inp.horizon))
            refusals.append(None)
        preds = iter(predict_tracked(self._model, requests) if requests else [])
        per = (time.perf_counter() - t0) / max(1, len(jobs))
        out: list[Attempt] = []
        for job, refusal in zip(jobs, refusals, strict=True):
            if refusal is not None:
                out.append(self.attempt(None, 0.0, job=job, seconds=per, error=refusal))
                continue
            f = next(preds)
            output = series.ForecastOutput(mean=f.mean.tolist(), p10=f.p10.tolist(), p90=f.p90.tolist())
            out.append(self.attempt(output, _confidence(f.track_mae, f.naive_mae), job=job, seconds=per))
        return out


class CfCForecaster(_LiquidForecastWorker):
    """Closed-form continuous-time (CfC) network; the first tier of ``series.forecast``."""

    name = "series.cfc"
    model_kind = "cfc"


class LTCForecaster(_LiquidForecastWorker):
    """Liquid time-constant (LTC) network with an AutoNCP wiring; the second tier."""

    name = "series.ltc"
    model_kind = "ltc"


class ClassicalForecaster(Worker):
    """Holt-Winters exponential smoothing (statsmodels), refitted per series; its confidence
    compares the fit's one-step in-sample error with seasonal-naive's. Like every tier it
    answers only what it is asked (the backtest is a job of its own). The offline last
    tier, named as such."""

    name = "series.classical"
    skill = "series.forecast"

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        out = []
        for job in jobs:
            inp = job.input
            assert isinstance(inp, series.ForecastInput)
            t0 = time.perf_counter()
            x = np.asarray(inp.values, dtype=float)
            s = series.effective_season(inp.season, x)
            m, lo, hi, resid_mae = series.classical_fit(x, inp.horizon, s)
            conf = _confidence(resid_mae, series.naive_scale(x, s))
            output = series.ForecastOutput(mean=m.tolist(), p10=lo.tolist(), p90=hi.tolist())
            out.append(self.attempt(output, conf, job=job, seconds=time.perf_counter() - t0))
        return out


# ---------------------------------------------------------------------------- anomaly workers


MIN_CONTEXT = 8


def one_step_scores(model: LiquidForecaster, values: F, k: F, season: int) -> tuple[F, float]:
    """Scores of one-step forecasts from rolling windows, and the ratio of their mean absolute
    residual to that of the naive one-step forecast (below 1: the model reads the series).

    The residual ``x_t - p50_t`` is divided by ``sigma_t`` (from the p10-p90 width) and then
    robustly standardised over the series (median, 1.4826 MAD), so scores read as robust
    z-scores whatever the model's calibration on this series. Two batched passes: the second
    re-reads windows in which points flagged by the first were replaced by their forecasts,
    so one spike does not disturb the scores after it. The first ``MIN_CONTEXT`` points score 0."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    s = season if season > 1 and n >= 2 * season else 1
    seas = series.seasonal_indices(x, k, s) if s > 1 else np.zeros(1)
    cfg = model.cfg
    idx = np.arange(MIN_CONTEXT, n)
    scores = np.zeros(n)
    if idx.size == 0:
        return scores, 1.0
    clean = x.copy()
    mid = x[idx]
    for _ in range(2):
        wins = [make_window(clean[max(0, i - cfg.context) : i], k[max(0, i - cfg.context) : i], s, 1, cfg.context, seas) for i in idx]
        preds = forecast_batch(model, wins)
        mid = np.array([p[0][0] for p in preds])
        sigma = np.maximum(np.array([p[2][0] - p[1][0] for p in preds]) / (2 * series.Z90), 1e-12)
        z = (x[idx] - mid) / sigma
        center = float(np.median(z))
        mad = 1.4826 * float(np.median(np.abs(z - center))) or float(np.std(z)) or 1.0
        scores[idx] = np.abs(z - center) / mad
        flagged = scores[idx] > FLAG_Z
        if not flagged.any():
            break
        clean = x.copy()
        clean[idx] = np.where(flagged, mid, x[idx])
    naive = float(np.mean(np.abs(np.diff(x)[MIN_CONTEXT - 1 :])))
    resid = float(np.mean(np.abs(x[idx] - mid)))
    return scores, (resid / naive if naive > 0 else (0.0 if resid == 0 else math.inf))


class CfCAnomalyScorer(Worker):
    """Scores each point by its one-step CfC forecast residual (the forecast checkpoint).

    Confidence: how much the one-step forecasts beat the naive one (1 at half its error, 0.5
    at parity, 0 at 1.5x); a model that cannot read the series escalates to the classical tier."""

    name = "series.cfc-anomaly"
    skill = "series.anomaly"
    checkpoint_dir: Path | None = None

    def __init__(self) -> None:
        self._model: LiquidForecaster | None = None

    def setup(self, device: str = "cpu") -> None:
        super().setup(device)
        set_torch_threads()
        self._model, _ = load_checkpoint(checkpoint_path("series.forecast", "cfc", self.checkpoint_dir))

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        if self._model is None:
            self.setup(self.device)
        assert self._model is not None
        out = []
        for job in jobs:
            inp = job.input
            assert isinstance(inp, series.AnomalyInput)
            t0 = time.perf_counter()
            x = np.asarray(inp.values, dtype=float)
            k, _ = series.grid_index(inp.timestamps, len(x))
            scores, ratio = one_step_scores(self._model, x, k, series.effective_season(inp.season, x))
            conf = float(np.clip(1.5 - ratio, 0.0, 1.0))
            output = series.AnomalyOutput(scores=scores.tolist(), flagged=np.flatnonzero(scores > FLAG_Z).tolist())
            out.append(self.attempt(output, conf, job=job, seconds=time.perf_counter() - t0, residual_vs_naive=ratio))
        return out


class ClassicalAnomalyScorer(Worker):
    """Robust z-scores of seasonal/trend residuals (running median, median seasonal indices).
    The offline last tier; its confidence is a fixed 0.9, not a self-assessment."""

    name = "series.classical-anomaly"
    skill = "series.anomaly"

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        out = []
        for job in jobs:
            inp = job.input
            assert isinstance(inp, series.AnomalyInput)
            t0 = time.perf_counter()
            x = np.asarray(inp.values, dtype=float)
            k, _ = series.grid_index(inp.timestamps, len(x))
            scores = series.classical_anomaly_scores(x, k, series.effective_season(inp.season, x))
            output = series.AnomalyOutput(scores=scores.tolist(), flagged=np.flatnonzero(scores > FLAG_Z).tolist())
            out.append(self.attempt(output, 0.9, job=job, seconds=time.perf_counter() - t0))
        return out


# ---------------------------------------------------------------------------- skills

_TORCH_POOL = PoolOptions(replicas=1, num_cpus=1.0, max_batch=128, max_wait_ms=3.0)
_CLASSICAL_POOL = PoolOptions(replicas=1, num_cpus=0.5, max_batch=16, max_wait_ms=2.0)


def _looks_like_forecast(inputs: dict[str, Any]) -> bool:
    return "values" in inputs and "horizon" in inputs


def _looks_like_anomaly(inputs: dict[str, Any]) -> bool:
    return "values" in inputs and "horizon" not in inputs


def forecast_skill() -> Skill:
    return Skill(
        name="series.forecast",
        description=(
            "Forecast the next 'horizon' steps of a numeric series with p10/p90 intervals. Input "
            "{'values': [float], 'timestamps': [float] (optional), 'horizon': int, 'season': int (optional)}."
        ),
        input_model=series.ForecastInput,
        output_model=series.ForecastOutput,
        ladder=[Tier("cfc", CfCForecaster, "tiny", _TORCH_POOL), Tier("ltc", LTCForecaster, "tiny", _TORCH_POOL)],
        fallback=Tier("classical", ClassicalForecaster, "tool", _CLASSICAL_POOL),
        verifier=series.ForecastBacktestVerifier(),
        holdout=series.backtest_input,  # each tier also forecasts the history minus its last window
        recognize=_looks_like_forecast,
    )


def anomaly_skill() -> Skill:
    return Skill(
        name="series.anomaly",
        description=(
            "Score every point of a numeric series for anomaly and flag the outliers. Input "
            "{'values': [float], 'timestamps': [float] (optional), 'season': int (optional)}."
        ),
        input_model=series.AnomalyInput,
        output_model=series.AnomalyOutput,
        ladder=[Tier("cfc-anomaly", CfCAnomalyScorer, "tiny", _TORCH_POOL)],
        fallback=Tier("classical-anomaly", ClassicalAnomalyScorer, "tool", _CLASSICAL_POOL),
        recognize=_looks_like_anomaly,
    )


def series_skills() -> list[Skill]:
    """The series skills, for ``default_registry()``."""
    return [forecast_skill(), anomaly_skill()]
