"""Training windows for the series models: fresh synthetic series every step, mixed with windows
cut from real series that ship inside statsmodels (loaded offline, nothing downloaded).

The real training pool never holds an evaluation source: the 18 evaluation series come from
``co2``, ``elnino``, ``sunspots``, ``nile``, ``macrodata``, ``interest_inflation`` and
``danish_data`` (:func:`workers.training.liquid.real_series`), and those data sets are held
out by name (:data:`HELD_OUT_SOURCES`; :func:`real_training_pool` asserts it). The pool:

- ``elec_equip``: euro-area electrical equipment orders, monthly, 257 values, season 12;
- ``fertility``: births per woman, annual 1960-2015, one series per country with >= 40 values;
- ``grunfeld``: investment, value and capital of 11 US firms, annual, 20 values each;
- ``copper``: world copper market, annual, 25 values, 5 columns.

Trends are scaled the way serving scales them (:func:`workers.serving.liquid.make_window`):
location is the median of the last 3 deseasonalised values, the unit is the window's mean
absolute step, and targets are clipped at +-100 units. A window cut from a short real series
has fewer than ``horizon`` future values; the missing targets are NaN and the loss masks them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from workers.kits import series
from workers.serving.liquid import QUANTILES, Window, make_window

__all__ = ["HELD_OUT_SOURCES", "RealTrainSeries", "masked_pinball", "real_training_pool", "series_batch"]

HELD_OUT_SOURCES = frozenset({"co2", "elnino", "sunspots", "nile", "macrodata", "interest_inflation", "danish_data"})
"""statsmodels data sets the evaluation series come from: never trained on."""

_SOURCE_WEIGHT = {"elec_equip": 0.3, "fertility": 0.5, "grunfeld": 0.1, "copper": 0.1}


@dataclass(frozen=True)
class RealTrainSeries:
    source: str
    name: str
    values: np.ndarray
    season: int


@functools.cache
def real_training_pool() -> tuple[RealTrainSeries, ...]:
    """The real series the models may train on (see the module docstring)."""
    import importlib

    def load(name: str) -> object:
        return importlib.import_module(f"statsmodels.datasets.{name}").load_pandas().data  # type: ignore[attr-defined]

    out: list[RealTrainSeries] = []
    elec = load("elec_equip")
    out.append(RealTrainSeries("elec_equip", "elec_equip", elec.iloc[:, 0].to_numpy(float), 12))  # type: ignore[attr-defined]
    fert = load("fertility")
    years = [c for c in fert.columns if c.isdigit()]  # type: ignore[attr-defined]
    for _, row in fert.iterrows():  # type: ignore[attr-defined]
        v = row[years].to_numpy(float)
        v = v[np.isfinite(v)]
        if len(v) >= 40:
            out.append(RealTrainSeries("fertility", f"fertility.{row['Country Code']}", v, 1))
    grun = load("grunfeld")
    for firm, g in grun.groupby("firm"):  # type: ignore[attr-defined]
        for col in ("invest", "value", "capital"):
            out.append(RealTrainSeries("grunfeld", f"grunfeld.{firm}.{col}", g.sort_values("year")[col].to_numpy(float), 1))
    cop = load("copper")
    for col in ("WORLDCONSUMPTION", "COPPERPRICE", "INCOMEINDEX", "ALUMPRICE", "INVENTORYINDEX"):
        out.append(RealTrainSeries("copper", f"copper.{col}", cop[col].to_numpy(float), 1))  # type: ignore[index]
    assert not {s.source for s in out} & HELD_OUT_SOURCES, "an evaluation source leaked into the training pool"
    return tuple(out)


def _real_window(rng: np.random.Generator, context: int, horizon: int) -> tuple[np.ndarray, int, np.ndarray]:
    """(history, season, future with NaN past the series' end) cut at a random origin."""
    pool = real_training_pool()
    sources = list(_SOURCE_WEIGHT)
    src = sources[int(rng.choice(len(sources), p=np.array([_SOURCE_WEIGHT[s] for s in sources])))]
    members = [s for s in pool if s.source == src]
    rs = members[int(rng.integers(len(members)))]
    v = rs.values * (-1.0 if rng.random() < 0.2 else 1.0)  # sign flips: falling trends too
    lo = min(12, len(v) - 2)
    cut = int(rng.integers(lo, len(v)))  # at least one future value
    hist = v[max(0, cut - context) : cut]
    fut = np.full(horizon, np.nan)
    tail = v[cut : cut + horizon]
    fut[: len(tail)] = tail
    return hist, rs.season, fut


def series_batch(rng: np.random.Generator, batch: int, context: int, horizon: int,
                 real_share: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x (B, L, F), ts (B, L, 1), y (B, H)): ``real_share`` of the windows cut from the real
    pool, the rest from fresh synthetic series (half full, half shorter and left-padded);
    ``y`` in each window's normalised units, NaN where a real series ends."""
    wins: list[Window] = []
    ys = np.zeros((batch, horizon), dtype=np.float32)
    for b in range(batch):
        if real_share > 0 and rng.random() < real_share:
            hist, season_given, fut = _real_window(rng, context, horizon)
            k = np.arange(len(hist))
            season = series.effective_season(season_given if rng.random() < 0.85 else None, hist)
        else:
            n_ctx = context if rng.random() < 0.5 else int(rng.integers(12, context + 1))
            s = series.generate_series(rng, n_ctx + horizon, regular_tail=horizon)
            k_all, _ = series.grid_index(s.timestamps.tolist(), len(s.values))
            hist, k, fut = s.values[:n_ctx], k_all[:n_ctx], s.values[n_ctx:]
            season = series.effective_season(s.season if rng.random() < 0.85 else None, hist)
        w = make_window(hist, k, season, horizon, context)
        wins.append(w)
        ys[b] = np.clip((fut - w.loc - w.future_season) / w.scale, -100, 100)
    x = torch.from_numpy(np.stack([w.x for w in wins]))
    ts = torch.from_numpy(np.stack([w.ts for w in wins]))[..., None]
    return x, ts, torch.from_numpy(ys)


def masked_pinball(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean pinball loss of (B, H, 3) quantiles against (B, H) targets, NaN targets left out."""
    qs = torch.tensor(QUANTILES, dtype=pred.dtype, device=pred.device)  # (Q,)
    valid = torch.isfinite(target)  # (B, H)
    diff = torch.where(valid, target, 0.0).unsqueeze(-1) - pred  # (B, H, Q)
    loss = torch.maximum(qs * diff, (qs - 1) * diff) * valid.unsqueeze(-1)
    return loss.sum() / (valid.sum() * len(QUANTILES)).clamp(min=1)
