"""Liquid-network series skills: the kit, the bundled checkpoints, the backtest verifier,
training, and escalation to the classical tier through a real Fleet."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator import ConfigError, Fleet, InputError, Task
from orchestrator.models import Attempt
from workers import Job, PoolOptions, Tier, Worker, validate_payload
from workers import series
from workers.builtin import default_registry
from workers.liquid import (
    CfCAnomalyScorer,
    CfCForecaster,
    ClassicalForecaster,
    LiquidConfig,
    LiquidForecaster,
    LTCForecaster,
    checkpoint_path,
    forecast_skill,
    load_checkpoint,
    pinball_loss,
)
from workers.liquid_training import real_series, training_batch

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def co2() -> np.ndarray:
    return next(r for r in real_series() if r.name.startswith("co2")).values


@pytest.fixture(scope="module")
def cfc() -> CfCForecaster:
    w = CfCForecaster()
    w.setup("cpu")
    return w


# ---------------------------------------------------------------------------- model


@pytest.mark.parametrize("cell", ["cfc", "ltc"])
def test_model_shapes_and_ordered_quantiles(cell: str) -> None:
    cfg = LiquidConfig(cell=cell, units=16, motor=6, context=20, horizon=5)  # type: ignore[arg-type]
    model = LiquidForecaster(cfg)
    x = torch.randn(3, 20, 2)
    ts = torch.rand(3, 20, 1) + 0.5
    q = model(x, ts)
    assert q.shape == (3, 5, 3)
    assert bool((q[..., 0] <= q[..., 1]).all() and (q[..., 1] <= q[..., 2]).all())


def test_smoke_training_lowers_the_loss() -> None:
    torch.manual_seed(0)
    cfg = LiquidConfig(cell="cfc", units=16, context=24, horizon=4)
    model = LiquidForecaster(cfg)
    val = training_batch(np.random.default_rng(123), 128, cfg)
    rng = np.random.default_rng(0)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)

    def val_loss() -> float:
        with torch.no_grad():
            return float(pinball_loss(model(val[0], val[1]), val[2]))

    before = val_loss()
    for _ in range(60):
        x, ts, y = training_batch(rng, 32, cfg)
        loss = pinball_loss(model(x, ts), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert val_loss() < 0.9 * before


def test_bundled_checkpoints_are_small_and_carry_a_model_card() -> None:
    for kind in ("cfc", "ltc"):
        path = checkpoint_path("series.forecast", kind)
        assert path.stat().st_size < 1_000_000
        _, card = load_checkpoint(path)
        for key in ("config", "recipe", "seed", "steps", "wall_s", "accuracy", "date"):
            assert key in card


def test_bad_checkpoint_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    good = checkpoint_path("series.forecast", "cfc")
    bad = tmp_path / "series.forecast-cfc.safetensors"
    bad.write_bytes(b"not a safetensors file")
    bad.with_suffix(".json").write_text(good.with_suffix(".json").read_text())
    with pytest.raises(ConfigError, match="series.forecast-cfc.safetensors"):
        load_checkpoint(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")
    worker = CfCForecaster()
    worker.checkpoint_dir = tmp_path
    with pytest.raises(ConfigError, match=str(bad)):
        worker.setup("cpu")


# ---------------------------------------------------------------------------- real series


def _forecast(worker: Worker, values: Sequence[float], horizon: int, season: int | None, **kw: object) -> series.ForecastOutput:
    inp = series.ForecastInput(values=list(values), horizon=horizon, season=season, **kw)  # type: ignore[arg-type]
    (a,) = worker.solve_batch([Job(inp)])
    assert a.output is not None, a.error
    return series.ForecastOutput.model_validate(a.output)


@pytest.mark.parametrize("worker_cls", [CfCForecaster, LTCForecaster])
def test_checkpoint_forecasts_real_series_with_finite_ordered_intervals(worker_cls: type[Worker]) -> None:
    worker = worker_cls()
    worker.setup("cpu")
    for rs in real_series()[:4]:  # co2, elnino, sunspots, nile
        out = _forecast(worker, rs.values[: -rs.horizon].tolist(), rs.horizon, rs.season)
        m, lo, hi = (np.asarray(v) for v in (out.mean, out.p10, out.p90))
        assert m.shape == (rs.horizon,)
        assert np.isfinite(m).all() and np.isfinite(lo).all() and np.isfinite(hi).all()
        assert (lo <= m).all() and (m <= hi).all() and (hi - lo).min() > 0


def test_cfc_beats_seasonal_naive_on_co2(cfc: CfCForecaster, co2: np.ndarray) -> None:
    hist, actual = co2[:-12], co2[-12:]
    out = _forecast(cfc, hist.tolist(), 12, 12)
    ours = series.mase(actual, np.asarray(out.mean), hist, 12)
    naive = series.mase(actual, series.seasonal_naive(hist, 12, 12), hist, 12)
    assert ours < naive


def test_irregular_timestamps_are_accepted(cfc: CfCForecaster, co2: np.ndarray) -> None:
    keep = np.ones(len(co2), dtype=bool)
    keep[np.random.default_rng(0).choice(len(co2) - 20, 40, replace=False) + 10] = False  # missing months
    ts = np.arange(len(co2), dtype=float)[keep]
    out = _forecast(cfc, co2[keep].tolist(), 6, 12, timestamps=ts.tolist())
    assert len(out.mean) == 6 and np.isfinite(out.mean).all()


# ---------------------------------------------------------------------------- verifier


class ConstantForecaster(Worker):
    """A deliberately broken model: forecasts (and backtests) one constant, the history's mean
    plus ``spans`` times its range."""

    name = "test.constant"
    skill = "series.forecast"
    spans = 0.0

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        out = []
        for job in jobs:
            inp = job.input
            assert isinstance(inp, series.ForecastInput)
            x = np.asarray(inp.values)
            c = float(x.mean() + self.spans * np.ptp(x))
            w = series.backtest_window(len(x), inp.horizon)
            bt = series.ForecastBacktest(window=w, mean=[c] * w, p10=[c - 1] * w, p90=[c + 1] * w)
            output = series.ForecastOutput(mean=[c] * inp.horizon, p10=[c - 1] * inp.horizon, p90=[c + 1] * inp.horizon, backtest=bt)
            out.append(self.attempt(output, 0.99, job=job))
        return out


def _verdict(values: Sequence[float], horizon: int, season: int | None, out: series.ForecastOutput) -> tuple[bool, str]:
    inp = series.ForecastInput(values=list(values), horizon=horizon, season=season)
    (v,) = series.ForecastBacktestVerifier().check_batch([(inp, out)])
    return v.ok, v.reason


def test_verifier_rejects_the_broken_model_and_accepts_good_ones(cfc: CfCForecaster, co2: np.ndarray) -> None:
    hist = co2[:-12].tolist()
    bad = _forecast(ConstantForecaster(), hist, 12, 12)  # plausible level, no seasonality or trend
    ok, why = _verdict(hist, 12, 12, bad)
    assert not ok and "seasonal-naive" in why
    far = ConstantForecaster()
    far.spans = 3.0
    ok, why = _verdict(hist, 12, 12, _forecast(far, hist, 12, 12).model_copy(update={"backtest": None}))
    assert not ok and "plausible range" in why
    for worker in (cfc, ClassicalForecaster()):
        ok, why = _verdict(hist, 12, 12, _forecast(worker, hist, 12, 12))
        assert ok, why


def test_verifier_rejects_degenerate_or_non_finite_intervals(cfc: CfCForecaster, co2: np.ndarray) -> None:
    hist = co2[:-12].tolist()
    good = _forecast(cfc, hist, 12, 12)
    m = list(good.mean)
    cases = {
        "non-finite": good.model_copy(update={"p90": [math.inf] + list(good.p90[1:])}),
        "out of order": good.model_copy(update={"p10": list(good.p90), "p90": list(good.p10)}),
        "zero width": good.model_copy(update={"p10": m, "p90": m}),
        "lengths": good.model_copy(update={"mean": m[:-1]}),
    }
    for what, out in cases.items():
        ok, why = _verdict(hist, 12, 12, out)
        assert not ok, what
        assert what.split()[0] in why.replace("holds non-finite", "non-finite"), (what, why)


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ({"values": [1.0, float("nan")] * 5, "horizon": 3}, "finite"),
        ({"values": [], "horizon": 3}, "at least"),
        ({"values": [1.0] * 20, "horizon": 0}, "positive"),
        ({"values": [1.0] * 20, "horizon": 500}, "too large"),
        ({"values": [1.0] * 10, "timestamps": [0, 1, 2, 3, 3, 5, 6, 7, 8, 9], "horizon": 2}, "strictly increasing"),
        ({"values": [1.0] * 10, "timestamps": [0, 1, 2], "horizon": 2}, "one timestamp per value"),
    ],
)
def test_bad_forecast_input_is_an_input_error(payload: dict[str, object], needle: str) -> None:
    with pytest.raises(InputError, match=needle):
        validate_payload(series.ForecastInput, payload, what="input")


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.floats(-1e6, 1e6), min_size=8, max_size=40),
    where=st.integers(0, 39),
    bad=st.sampled_from([math.nan, math.inf, -math.inf]),
)
def test_any_non_finite_value_is_rejected(values: list[float], where: int, bad: float) -> None:
    values[where % len(values)] = bad
    with pytest.raises(InputError, match="finite"):
        validate_payload(series.ForecastInput, {"values": values, "horizon": 2}, what="input")
    with pytest.raises(InputError, match="finite"):
        validate_payload(series.AnomalyInput, {"values": values}, what="input")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 1e3), min_size=8, max_size=30))
def test_timestamps_that_do_not_increase_are_rejected(ts: list[float]) -> None:
    ts = sorted(ts)[::-1]  # non-increasing
    with pytest.raises(InputError):
        validate_payload(series.AnomalyInput, {"values": [0.0] * len(ts), "timestamps": ts}, what="input")


# ---------------------------------------------------------------------------- anomaly


def test_anomaly_scorer_finds_injected_spikes() -> None:
    rng = np.random.default_rng(3)
    t = np.arange(300)
    base = series.Synth(10 + 0.02 * t + 2 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 0.3, 300), t.astype(float), 12, np.zeros(0))
    s = series.inject_anomalies(rng, base, rate=0.01, size=8)
    w = CfCAnomalyScorer()
    w.setup("cpu")
    (a,) = w.solve_batch([Job(series.AnomalyInput(values=s.values.tolist(), season=12))])
    out = series.AnomalyOutput.model_validate(a.output)
    assert len(out.scores) == 300
    assert set(s.anomalies.tolist()) <= set(out.flagged)
    assert len(out.flagged) <= 2 * len(s.anomalies)


# ---------------------------------------------------------------------------- end to end


def test_fleet_verifies_cfc_on_a_real_series(co2: np.ndarray) -> None:
    fleet = Fleet(executor="local")
    try:
        report = fleet.run_sync(Task(inputs={"values": co2[:-12].tolist(), "horizon": 12, "season": 12}))
        assert report.status == "succeeded", report.error
        (step,) = report.steps
        assert step.skill == "series.forecast" and step.status == "verified" and step.tier == "cfc"
        anomaly = fleet.run_sync(Task(inputs={"values": co2[:200].tolist(), "season": 12}))
        assert anomaly.status == "succeeded" and anomaly.steps[0].skill == "series.anomaly"
    finally:
        fleet.close_sync()


def test_broken_forecast_escalates_to_the_classical_tier(co2: np.ndarray) -> None:
    reg = default_registry()
    broken = Tier("broken", ConstantForecaster, "tiny", PoolOptions(inline=True))
    reg.register(dataclasses.replace(forecast_skill(), ladder=[broken]))
    fleet = Fleet(executor="local", registry=reg)
    try:
        report = fleet.run_sync(Task(skill="series.forecast", inputs={"values": co2[:-12].tolist(), "horizon": 12, "season": 12}))
    finally:
        fleet.close_sync()
    assert report.status == "succeeded", report.error
    (step,) = report.steps
    assert step.escalated and step.tiers_tried == ["broken", "classical"] and step.tier == "classical"
    rejected = step.trials[0].verdict
    assert rejected is not None and not rejected.ok
