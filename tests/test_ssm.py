"""The selective state-space tier: the model (shapes, order, causality), a seconds-long training
run whose loss falls, and the bundled checkpoint on real series near its model card."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from workers import Job
from workers.kits import series
from workers.models.ssm import SelectiveSSM, SSMConfig, StateSpaceForecaster, selective_scan
from workers.serving.liquid import checkpoint_path, load_checkpoint
from workers.serving.liquid_workers import SSMForecaster as SSMWorker
from workers.training.liquid import CONFIGS, real_series, training_batch
from workers.training.series_data import HELD_OUT_SOURCES, masked_pinball, real_training_pool

SMALL = SSMConfig(d_model=16, d_inner=32, d_state=4, dt_rank=2, layers=1, context=24, horizon=4)


def test_shapes_and_ordered_quantiles() -> None:
    torch.manual_seed(0)
    model = StateSpaceForecaster(SMALL)
    q = model(torch.randn(5, 24, 2), torch.rand(5, 24, 1) + 0.5)
    assert q.shape == (5, 4, 3)
    assert bool((q[..., 0] <= q[..., 1]).all() and (q[..., 1] <= q[..., 2]).all())


def test_the_block_is_causal() -> None:
    """Changing the input from step t on leaves every output before t as it was."""
    torch.manual_seed(1)
    block = SelectiveSSM(SMALL).eval()
    u, ts = torch.randn(2, 24, 16), torch.ones(2, 24, 1)
    v = u.clone()
    v[:, 10:] += torch.randn(2, 14, 16)
    with torch.no_grad():
        a, b = block(u, ts), block(v, ts)
    assert torch.allclose(a[:, :10], b[:, :10], atol=1e-6)
    assert not torch.allclose(a[:, 10:], b[:, 10:], atol=1e-3)


def test_scan_is_the_recurrence() -> None:
    """One channel, one state, constant step: h_t = exp(d*a) h_{t-1} + d*b*v_t, y = c*h + D*v."""
    v = torch.tensor([[[1.0], [2.0], [0.0]]])  # (B=1, L=3, E=1)
    delta = torch.full((1, 3, 1), 0.5)
    a = torch.tensor([[-2.0]])
    b = torch.ones(1, 3, 1)
    c = torch.full((1, 3, 1), 3.0)
    y = selective_scan(v, delta, a, b, c, torch.tensor([0.1]))
    decay = float(np.exp(-1.0))
    h = [0.5, decay * 0.5 + 1.0, decay * (decay * 0.5 + 1.0)]
    want = [3 * h[0] + 0.1, 3 * h[1] + 0.2, 3 * h[2]]
    assert y.flatten().tolist() == pytest.approx(want, rel=1e-5)


def test_seconds_of_training_lower_the_loss() -> None:
    torch.manual_seed(0)
    model = StateSpaceForecaster(SMALL)
    val = training_batch(np.random.default_rng(123), 128, SMALL, real_share=0.3)
    rng = np.random.default_rng(0)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)

    def val_loss() -> float:
        with torch.no_grad():
            return float(masked_pinball(model(val[0], val[1]), val[2]))

    before = val_loss()
    for _ in range(60):
        x, ts, y = training_batch(rng, 32, SMALL, real_share=0.3)
        loss = masked_pinball(model(x, ts), y)
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    assert val_loss() < 0.9 * before


def test_real_training_pool_holds_out_every_evaluation_source() -> None:
    pool = real_training_pool()
    assert len(pool) > 100 and not {s.source for s in pool} & HELD_OUT_SOURCES
    eval_sources = {r.name.split(" ")[0].split(".")[0] for r in real_series()}
    renamed = {"macro": "macrodata", "danish": "danish_data"}
    assert {renamed.get(s, s) for s in eval_sources} == HELD_OUT_SOURCES
    # a window cut near a short series' end has NaN targets, and the loss leaves them out
    x, ts, y = training_batch(np.random.default_rng(5), 256, CONFIGS["ssm"], real_share=1.0)
    assert bool(torch.isnan(y).any()) and bool(torch.isfinite(masked_pinball(torch.zeros(256, 24, 3), y)))


# ---------------------------------------------------------------------------- the bundled checkpoint


def test_bundled_checkpoint_forecasts_two_real_series_near_its_card() -> None:
    """The served worker on co2 and macro.cpi, 3 rolling origins each: shapes, ordered bands,
    MASE within 10% of the per-series numbers the card records, and better than seasonal naive."""
    path = checkpoint_path("series.forecast", "ssm")
    assert path.stat().st_size < 1_000_000
    model, card = load_checkpoint(path)
    assert isinstance(model, StateSpaceForecaster) and card["seed"] == 0 and card["recipe"]["real_share"] > 0
    want = card["eval"]["per_series_mase"]
    worker = SSMWorker()
    worker.setup("cpu")
    for rs in (r for r in real_series() if r.name in ("co2 (monthly)", "macro.cpi (quarterly)")):
        errs, naive = [], []
        for j in range(3, 0, -1):
            cut = len(rs.values) - j * rs.horizon
            hist, act = rs.values[:cut], rs.values[cut : cut + rs.horizon]
            (a,) = worker.solve_batch([Job(series.ForecastInput(values=hist.tolist(), horizon=rs.horizon, season=rs.season))])
            assert a.output is not None, a.error
            out = series.ForecastOutput.model_validate(a.output)
            mean, lo, hi = (np.asarray(v) for v in (out.mean, out.p10, out.p90))
            assert mean.shape == lo.shape == hi.shape == (rs.horizon,)
            assert bool((lo <= mean).all() and (mean <= hi).all() and (hi > lo).any())
            errs.append(series.mase(act, mean, hist, rs.season))
            naive.append(series.mase(act, series.seasonal_naive(hist, rs.horizon, rs.season), hist, rs.season))
        got = float(np.mean(errs))
        assert got <= 1.10 * want[rs.name] + 0.02, (rs.name, got, want[rs.name])
        assert got < float(np.mean(naive)), rs.name


def test_eval_reports_the_comparison_table_and_the_targets(capsys: pytest.CaptureFixture[str]) -> None:
    """``tinyfleet eval --skill series.forecast --model ssm --n 2 --json``, in-process: per series
    the model, seasonal naive, Holt-Winters and Theta; geometric means; both select rules of the
    served ladder; each target with its value and whether it is met."""
    import argparse
    import json

    from workers.training.liquid import eval_command

    args = argparse.Namespace(skill="series.forecast", model="ssm", n=2, json=True, checkpoint=None, out=None, seed=None)
    assert eval_command(args) == 0
    r = json.loads(capsys.readouterr().out)
    assert [s["series"] for s in r["series"]] == ["co2 (monthly)", "elnino (monthly)"]
    for key in ("mase_model", "mase_naive", "mase_classical", "mase_theta", "cov_model", "cov_theta"):
        assert all(math.isfinite(s[key]) for s in r["series"]), key
    assert r["summary"]["geomean_mase_theta"] > 0 and r["summary"]["origins_per_series"] == 3
    assert r["fleet"]["ladder"] == ["cfc", "ssm", "ltc", "classical"]
    for rule in ("first_verified", "best_score"):
        assert sum(r["fleet"][rule]["settled_at"].values()) == r["fleet"]["cases"] == 6
    # co2: best_score keeps Holt-Winters' answer where its backtest is better, so it is never worse there
    co2 = "co2 (monthly)"
    assert r["fleet"]["best_score"]["per_series_ratio_vs_classical"][co2] <= r["fleet"]["first_verified"]["per_series_ratio_vs_classical"][co2]
    assert all(set(t) == {"value", "met"} for t in r["targets"].values())
