"""Liquid-network series skills: the kit, the bundled checkpoints, the backtest verifier
(which holds the truth: tiers forecast the cut history as a job of their own), training,
and escalation to the classical tier and the large model through a real Fleet."""

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

from orchestrator import ConfigError, Cost, Fleet, InputError, Task
from planners.rules import RulePlanner
from tinyfleet_core.models import Attempt, RunReport, Step
from workers import Job, PoolOptions, Tier, Worker, validate_payload
from workers.base import Skill
from workers.builtin import default_registry
from workers.kits import series
from workers.serving.liquid import (
    CfCAnomalyScorer,
    CfCForecaster,
    ClassicalForecaster,
    LiquidConfig,
    LiquidForecaster,
    checkpoint_path,
    forecast_skill,
    load_checkpoint,
    pinball_loss,
)
from workers.training.liquid import real_series, training_batch

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
    for kind in ("cfc", "ltc", "ssm"):
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


@pytest.mark.parametrize("kind", ["cfc", "ltc"])
def test_checkpoint_forecasts_real_series_near_its_model_card(kind: str) -> None:
    """The card's own evaluation (18 real series x 3 origins), re-run: the checkpoint and
    the inference path still measure what the card says, within a few points."""
    from workers.training.liquid import evaluate_forecast

    model, card = load_checkpoint(checkpoint_path("series.forecast", kind))
    got = evaluate_forecast(model, real_series(), theta=False)["summary"]
    want = card["accuracy"]
    assert got["series"] == want["series"] == 18
    assert got["mean_mase_model"] <= 1.05 * want["mean_mase_model"]  # cards: cfc 2.53, ltc 2.63; 5% margin
    assert got["mean_mase_model"] < got["mean_mase_naive"]  # and it beats seasonal-naive on average (2.99)
    assert got["beats_naive"] >= want["beats_naive"] - 1  # cards: cfc 12, ltc 11 of 18 series
    assert got["coverage_p10_p90_model"] >= want["coverage_p10_p90_model"] - 0.05  # cards: 74%, 76%


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
    """A deliberately broken model: forecasts one constant, the history's mean plus
    ``spans`` times its range (for the backtest job too: it answers what it is asked)."""

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
            output = series.ForecastOutput(mean=[c] * inp.horizon, p10=[c - 1] * inp.horizon, p90=[c + 1] * inp.horizon)
            out.append(self.attempt(output, 0.99, job=job))
        return out


class PeekingForecaster(ConstantForecaster):
    """Games the old design: it attaches a 'backtest' made of the true last values of its
    own input (a perfect score, if anyone read it) to the constant forecast."""

    name = "test.peeking"

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        out = super().solve_batch(jobs)
        for job, a in zip(jobs, out, strict=True):
            inp = job.input
            assert isinstance(inp, series.ForecastInput) and a.output is not None
            w = series.backtest_window(len(inp.values), inp.horizon)
            truth = list(inp.values[-w:])
            a.output["backtest"] = {"window": w, "mean": truth, "p10": [v - 1 for v in truth], "p90": [v + 1 for v in truth]}
        return out


class RecordingForecaster(Worker):
    """The classical forecaster, recording every input it is sent (in this process)."""

    name = "test.recording"
    skill = "series.forecast"
    seen: list[series.ForecastInput] = []

    def solve_batch(self, jobs: Sequence[Job]) -> list[Attempt]:
        RecordingForecaster.seen.extend(j.input for j in jobs)  # type: ignore[misc]
        return ClassicalForecaster().solve_batch(jobs)


def _backtest(worker: Worker, values: Sequence[float], horizon: int, season: int | None) -> series.ForecastOutput | None:
    """The worker's answer to the verifier's backtest job, as the run loop would ask it."""
    held = series.backtest_input(series.ForecastInput(values=list(values), horizon=horizon, season=season))
    (a,) = worker.solve_batch([Job(held)])
    return series.ForecastOutput.model_validate(a.output) if a.output is not None else None


def _verdict(
    values: Sequence[float], horizon: int, season: int | None, out: series.ForecastOutput, bt: series.ForecastOutput | None
) -> tuple[bool, str]:
    inp = series.ForecastInput(values=list(values), horizon=horizon, season=season)
    (v,) = series.ForecastBacktestVerifier().check_holdout_batch([(inp, out, bt)])
    return v.ok, v.reason



def _forecast_on_one_tier(name: str, worker: type, hist: list[float]) -> RunReport:
    """A real local fleet whose forecast ladder is the one tier ``worker`` (then the final tier),
    climbed one tier at a time (first_verified: these tests are about the backtest job)."""
    reg = default_registry()
    tier = Tier(name, worker, "tiny", PoolOptions(inline=True))
    reg.register(dataclasses.replace(forecast_skill(), ladder=[tier], select="first_verified"))
    fleet = Fleet(executor="local", registry=reg)
    try:
        return fleet.run_sync(Task(skill="series.forecast", inputs={"values": hist, "horizon": 12, "season": 12}))
    finally:
        fleet.close_sync()

def test_backtest_input_cuts_the_held_out_window() -> None:
    values = [float(v) for v in range(40)]
    inp = series.ForecastInput(values=values, timestamps=[2.0 * v for v in range(40)], horizon=12, season=10)
    held = series.backtest_input(inp)
    w = series.backtest_window(40, 12)
    assert w == 8 and held.horizon == w
    assert held.values == values[:-w] and held.timestamps == [2.0 * v for v in range(40 - w)]
    assert held.season == 10
    assert series.backtest_input(series.ForecastInput(values=values[:20], horizon=4, season=10)).season == 1  # too few cycles left
    short = series.backtest_input(series.ForecastInput(values=values[:8], horizon=3))
    assert len(short.values) == 7 and short.horizon == 1  # a user may not send 7 values; a backtest may use them


def test_verifier_scores_the_tiers_backtest_against_truth_it_keeps(cfc: CfCForecaster, co2: np.ndarray) -> None:
    hist = co2[:-12].tolist()
    bad = ConstantForecaster()
    ok, why = _verdict(hist, 12, 12, _forecast(bad, hist, 12, 12), _backtest(bad, hist, 12, 12))
    assert not ok and "seasonal-naive" in why  # plausible level, no seasonality or trend: caught
    far = ConstantForecaster()
    far.spans = 3.0
    ok, why = _verdict(hist, 12, 12, _forecast(far, hist, 12, 12), _backtest(far, hist, 12, 12))
    assert not ok and "plausible range" in why
    for worker in (cfc, ClassicalForecaster()):
        ok, why = _verdict(hist, 12, 12, _forecast(worker, hist, 12, 12), _backtest(worker, hist, 12, 12))
        assert ok, why
        assert "backtest MASE" in why


def test_a_forecast_without_a_backtest_is_never_verified(cfc: CfCForecaster, co2: np.ndarray) -> None:
    hist = co2[:-12].tolist()
    good = _forecast(cfc, hist, 12, 12)
    ok, why = _verdict(hist, 12, 12, good, None)
    assert not ok and why.startswith("unverified: no backtest forecast")
    inp = series.ForecastInput(values=hist, horizon=12, season=12)
    (v,) = series.ForecastBacktestVerifier().check_batch([(inp, good)])  # no holdout answer at all
    assert not v.ok and v.details["backtest"] is False


def test_a_producer_supplied_backtest_is_ignored(co2: np.ndarray) -> None:
    hist = co2[:-12].tolist()
    peek = PeekingForecaster()
    out = _forecast(peek, hist, 12, 12)
    ok, why = _verdict(hist, 12, 12, out, _backtest(peek, hist, 12, 12))
    assert not ok and "seasonal-naive" in why  # its own 'perfect' backtest field was not read
    report = _forecast_on_one_tier("peek", PeekingForecaster, hist)
    (step,) = report.steps
    assert step.tiers_tried == ["peek", "classical"] and step.tier == "classical"
    assert step.trials[0].verdict is not None and not step.trials[0].verdict.ok


def test_tiers_are_sent_the_cut_history_in_the_same_batch_and_never_its_truth(co2: np.ndarray) -> None:
    RecordingForecaster.seen = []
    hist = co2[:-12].tolist()
    report = _forecast_on_one_tier("rec", RecordingForecaster, hist)
    (step,) = report.steps
    assert step.status == "verified" and step.tier == "rec", step.error
    w = series.backtest_window(len(hist), 12)
    full, cut = sorted(RecordingForecaster.seen, key=lambda i: -len(i.values))
    assert full.values == hist and full.horizon == 12
    assert cut.values == hist[:-w] and cut.horizon == w  # the held-out values were never sent with it
    verdict = step.trials[0].verdict
    assert verdict is not None and verdict.details["backtest"] is True and verdict.details["window"] == w
    assert len(step.trials) == 1 and report.totals.particles == 1  # the backtest job is not a particle


class ClassicalLargeModel(RulePlanner):
    """A planner whose ``solve`` plays the large model with the classical forecaster and
    charges one call each time; ``refuse_backtest`` makes it answer nothing on the cut
    history. Not an LLM, and named so."""

    name = "test-classical-large"
    has_large_model = True

    def __init__(self, refuse_backtest: bool = False) -> None:
        super().__init__()
        self.refuse_backtest = refuse_backtest
        self.asked: list[series.ForecastInput] = []

    async def solve(self, step: Step, inputs: object, skill: Skill) -> Attempt:
        assert isinstance(inputs, series.ForecastInput)
        self.asked.append(inputs)
        cost = Cost(large_calls=1, tokens_in=100, tokens_out=50)
        if self.refuse_backtest and len(self.asked) > 1:
            return Attempt(output=None, confidence=0.0, worker="test-large", error="refused", cost=cost)
        (a,) = ClassicalForecaster().solve_batch([Job(inputs)])
        return a.model_copy(update={"worker": "test-large", "cost": cost})


@pytest.mark.parametrize("refuse", [False, True])
def test_a_large_model_answer_is_backtested_by_a_second_call(co2: np.ndarray, refuse: bool) -> None:
    from orchestrator import Policy

    hist = co2[:-12].tolist()
    large = ClassicalLargeModel(refuse_backtest=refuse)
    fleet = Fleet(planner=large, executor="local", policy=Policy(mode="final_only", replans=0))
    try:
        report = fleet.run_sync(Task(skill="series.forecast", inputs={"values": hist, "horizon": 12, "season": 12}))
    finally:
        fleet.close_sync()
    w = series.backtest_window(len(hist), 12)
    assert [len(i.values) for i in large.asked] == [len(hist), len(hist) - w]
    assert report.totals.large_model_calls == 2  # the backtest call is counted and priced
    (step,) = report.steps
    if refuse:
        assert report.status == "failed" and step.status == "failed"
        assert "unverified: no backtest forecast" in (step.error or "")
    else:
        assert report.status == "succeeded" and step.status == "verified" and step.tier == "large"


def test_verifier_rejects_degenerate_or_non_finite_intervals(cfc: CfCForecaster, co2: np.ndarray) -> None:
    hist = co2[:-12].tolist()
    good = _forecast(cfc, hist, 12, 12)
    bt = _backtest(cfc, hist, 12, 12)
    assert _verdict(hist, 12, 12, good, bt)[0]  # the unbroken answer passes: each case below breaks one thing
    m = list(good.mean)
    cases = {
        "non-finite": good.model_copy(update={"p90": [math.inf] + list(good.p90[1:])}),
        "out of order": good.model_copy(update={"p10": list(good.p90), "p90": list(good.p10)}),
        "zero width": good.model_copy(update={"p10": m, "p90": m}),
        "lengths": good.model_copy(update={"mean": m[:-1]}),
    }
    for what, out in cases.items():
        ok, why = _verdict(hist, 12, 12, out, bt)
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
    """series.forecast's default select is best_score: CfC and Holt-Winters answer together,
    the better backtest settles and both scores are reported; first_verified keeps CfC's."""
    from orchestrator import Plan, Step, Strategy

    fleet = Fleet(executor="local")
    inputs = {"values": co2[:-12].tolist(), "horizon": 12, "season": 12}
    try:
        report = fleet.run_sync(Task(inputs=inputs))
        assert report.status == "succeeded", report.error
        (step,) = report.steps
        assert step.skill == "series.forecast" and step.status == "verified"
        assert step.tiers_tried == ["cfc", "classical"] and set(step.compared) == {"cfc", "classical"}
        scores = {t: s for t, s in step.compared.items() if s is not None}
        assert step.tier == min(scores, key=lambda t: (scores[t], t != "cfc"))  # the lower backtest MASE
        first = Plan(steps=[Step(id="s", skill="series.forecast", inputs=inputs, strategy=Strategy(select="first_verified"))],
                     output="s")
        (fv,) = fleet.run_sync(Task(inputs=inputs), plan=first).steps
        assert fv.status == "verified" and fv.tier == "cfc" and fv.tiers_tried == ["cfc"] and fv.compared == {}
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
    # series.forecast's best_score: the broken tier and Holt-Winters run together (one rung), Holt-Winters settles
    assert not step.escalated and step.tiers_tried == ["broken", "classical"] and step.tier == "classical"
    assert step.compared == {"broken": None, "classical": step.compared["classical"]} and step.compared["classical"] is not None
    rejected = step.trials[0].verdict
    assert rejected is not None and not rejected.ok


def test_the_backtest_call_never_runs_a_large_call_budget_over(co2: np.ndarray) -> None:
    """With max_large_calls=1 the large model answers once; the backtest call is refused by
    the budget (its first call was already charged), so the answer stays unverified."""
    from orchestrator import Budget, Policy

    hist = co2[:-12].tolist()
    large = ClassicalLargeModel()
    fleet = Fleet(planner=large, executor="local", policy=Policy(mode="final_only", replans=0))
    try:
        report = fleet.run_sync(
            Task(skill="series.forecast", inputs={"values": hist, "horizon": 12, "season": 12}, budget=Budget(max_large_calls=1))
        )
    finally:
        fleet.close_sync()
    assert len(large.asked) == 1 and report.totals.large_model_calls == 1
    assert report.steps[0].status != "verified"
