"""The walk-forward's pure parts on hand-made records: stitching, the summary table, the verdict rule
and the overfitting statistics' notes (no Ray, no MLflow; the smoke run is in test_rl_evaluate.py)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from tradebot.envs.performance import M, compute_metrics
from tradebot.rl.walkforward.folds import Fold
from tradebot.rl.walkforward.results import AGENT, AGENT_SELECTED, SCOPE_FOLD, SCOPE_FOLDS, SCOPE_STITCHED, SeedRun
from tradebot.rl.walkforward.stitching import WindowRecord, session_returns, stitch
from tradebot.rl.walkforward.summary import summarise
from tradebot.rl.walkforward.verdicts import baseline_verdicts, overfitting_statistics

CASH = 100_000.0
BASELINE = "sma_crossover"


def _equity(day: dt.date, values: list[float]) -> pd.Series:
    start = pd.Timestamp(f"{day.isoformat()} 09:15", tz="Asia/Kolkata")
    return pd.Series(values, index=pd.date_range(start, periods=len(values), freq="5min"), name="equity")


def _record(eq: pd.Series) -> WindowRecord:
    return WindowRecord(eq, np.zeros(len(eq)), np.zeros(0), 0.0, 0.0, 0)


def _metrics(eq: pd.Series) -> dict[str, float]:
    return dict(compute_metrics(eq, timeframe="5m", initial_capital=CASH).values)


def test_stitch_chains_window_returns_from_the_initial_cash():
    a = _equity(dt.date(2021, 3, 1), [110_000.0, 121_000.0])
    b = _equity(dt.date(2021, 3, 8), [90_000.0, 99_000.0])
    chained = stitch([a, b], CASH)
    assert chained.to_numpy() == pytest.approx([110_000.0, 121_000.0, 108_900.0, 119_790.0])
    daily = session_returns(chained, CASH)
    assert list(daily.index) == [dt.date(2021, 3, 1), dt.date(2021, 3, 8)]
    assert daily.to_numpy() == pytest.approx([0.21, 119_790.0 / 121_000.0 - 1.0])


def test_summary_has_every_scope_and_strategy_and_stitches_the_selected_seed():
    days = [dt.date(2021, 3, 1), dt.date(2021, 3, 8)]
    folds = [Fold(i, (d - dt.timedelta(days=4),), (d - dt.timedelta(days=2),), (d,)) for i, d in enumerate(days)]
    curves = {(0, 0): [100_500.0, 101_000.0], (0, 1): [99_000.0, 98_000.0],
              (1, 0): [100_000.0, 99_500.0], (1, 1): [100_200.0, 100_400.0]}
    runs = []
    for (fold, seed), values in curves.items():
        eq = _equity(days[fold], values)
        runs.append(SeedRun(fold=fold, seed=seed, output_dir=None, checkpoint="", iterations=1, stopped_early=False,
                            best_validation_return=float(seed == fold), mlflow_run_id="", model_uri="",
                            metrics=_metrics(eq), record=_record(eq), reused_training=False, reused_test=False,
                            selected=seed == fold))
    baseline_equity = {i: _equity(d, [100_100.0, 100_300.0]) for i, d in enumerate(days)}
    baselines = {i: {BASELINE: compute_metrics(eq, timeframe="5m", initial_capital=CASH)}
                 for i, eq in baseline_equity.items()}
    records = {i: {BASELINE: _record(eq)} for i, eq in baseline_equity.items()}

    s = summarise(folds, runs, baselines, records, [BASELINE], [0, 1], CASH, "5m")
    t = s.table
    assert len(t) == 3 * 2 + 3 + 3  # per fold x 2, over folds, stitched
    assert set(t[t["scope"] == SCOPE_FOLD]["strategy"]) == {AGENT, AGENT_SELECTED, BASELINE}
    agent_fold0 = t[(t["scope"] == SCOPE_FOLD) & (t["strategy"] == AGENT) & (t["fold"] == 0)].iloc[0]
    assert agent_fold0["n"] == 2 and agent_fold0[f"{M.TOTAL_RETURN}_mean"] == pytest.approx((0.01 - 0.02) / 2)
    assert t[(t["scope"] == SCOPE_FOLDS) & (t["strategy"] == AGENT)].iloc[0]["n"] == 2
    assert list(s.stitched) == [AGENT_SELECTED, BASELINE, f"{AGENT}_seed_0", f"{AGENT}_seed_1"]
    # agent_selected: seed 0 in fold 0, seed 1 in fold 1
    assert s.stitched[AGENT_SELECTED].to_numpy() == pytest.approx(stitch(
        [_equity(days[0], curves[(0, 0)]), _equity(days[1], curves[(1, 1)])], CASH).to_numpy())
    assert s.per_fold[AGENT][0][M.TOTAL_RETURN] == pytest.approx(-0.005)
    assert len(t[t["scope"] == SCOPE_STITCHED]) == 3


def _verdict(agent: list[tuple[float, float]], baseline: list[tuple[float, float]]):
    """The verdict from per-fold (Sharpe, total return) pairs of the agent and the baseline."""
    as_metrics = lambda pairs: [{M.SHARPE: s, M.TOTAL_RETURN: r} for s, r in pairs]  # noqa: E731
    return baseline_verdicts({AGENT: as_metrics(agent), BASELINE: as_metrics(baseline)}, [BASELINE])[0]


def test_verdict_needs_higher_means_and_fewer_than_half_the_folds_worse():
    beats = _verdict([(1.0, 0.02), (2.0, 0.01), (-1.0, -0.01)], [(0.0, 0.0)] * 3)
    assert beats.beats and beats.folds_worse == 1 and beats.folds == 3
    assert beats.line.startswith(f"agent beats {BASELINE} out of sample: mean Sharpe 0.67 vs 0.00")
    # a higher mean, but worse in two folds of three
    lucky = _verdict([(9.0, 0.05), (-1.0, -0.01), (-1.0, -0.01)], [(0.0, 0.0)] * 3)
    assert not lucky.beats and f"agent does NOT beat {BASELINE}" in lucky.line
    assert "(2/3 folds worse)" in lucky.line
    # a higher Sharpe ratio but a lower return
    poorer = _verdict([(1.0, 0.001)], [(0.5, 0.01)])
    assert not poorer.beats


def test_overfitting_statistics_say_why_a_statistic_is_missing():
    one_day = _equity(dt.date(2021, 3, 1), [100_500.0, 101_000.0])
    single = overfitting_statistics({0: one_day}, one_day, CASH, configs_tried=1, pbo_partitions=4)
    assert single.deflated_sharpe is None and single.pbo is None
    assert single.notes == ["deflated Sharpe ratio: fewer than 2 out-of-sample sessions",
                            "PBO: needs at least 2 seeds (trials)"]
    rng = np.random.default_rng(0)
    days = pd.bdate_range("2021-03-01", periods=6)
    seeds = {s: _equity_days(days, rng) for s in (0, 1)}
    stats = overfitting_statistics(seeds, seeds[0], CASH, configs_tried=3, pbo_partitions=8)
    assert stats.deflated_sharpe is not None and stats.deflated_sharpe.n_trials == 6
    assert stats.deflated_sharpe.n_obs == 6
    assert stats.pbo is not None and stats.pbo.n_partitions == 6
    assert stats.notes == ["PBO: 6 sessions allow only 6 CSCV blocks (asked for 8)"]


def _equity_days(days: pd.DatetimeIndex, rng: np.random.Generator) -> pd.Series:
    index = pd.DatetimeIndex([pd.Timestamp(f"{d.date()} 15:25", tz="Asia/Kolkata") for d in days])
    return pd.Series(CASH * np.cumprod(1.0 + rng.normal(0, 0.01, len(days))), index=index, name="equity")


def test_pooled_record_is_the_equal_weight_portfolio_of_the_instruments():
    from tradebot.rl.walkforward.views import pool_records, record_metrics

    day = dt.date(2021, 3, 1)
    a = WindowRecord(_equity(day, [110_000.0, 120_000.0, 120_000.0]), np.array([1.0, 1.0, 0.0]),
                     np.array([20_000.0]), 400_000.0, 300.0, 0)
    b = WindowRecord(_equity(day, [100_000.0, 90_000.0, 95_000.0]), np.array([0.0, -5.0, 0.0]),
                     np.array([-4_000.0, -1_000.0]), 200_000.0, 100.0, 1)
    pooled = pool_records([a, b], CASH)
    assert pooled.equity.to_numpy() == pytest.approx([105_000.0, 105_000.0, 107_500.0])
    assert list(pooled.positions) == [1.0, 1.0, 0.0]  # in the market in any instrument
    assert pooled.trade_pnl == pytest.approx([10_000.0, -2_000.0, -500.0])  # each account is half the portfolio
    assert (pooled.traded_notional, pooled.costs, pooled.invalid_actions) == (300_000.0, 200.0, 1)
    m = record_metrics(pooled, CASH, "5m")
    assert m[M.TOTAL_RETURN] == pytest.approx(0.075) and m[M.WIN_RATE] == pytest.approx(1 / 3)


def test_selection_picks_the_variant_with_the_higher_validation_sharpe_never_the_test():
    from tradebot.rl.walkforward.views import ValidationScores, selection

    scores = [ValidationScores(0, {0: 1.0, 1: 3.0}, 1, 2.0), ValidationScores(1, {0: 0.5, 1: -1.0}, 0, 0.0)]
    sel = selection(scores)
    assert sel["agent_selected_validation_sharpe"] == pytest.approx(1.75)  # (3.0 + 0.5) / 2
    assert sel["agent_ensemble_validation_sharpe"] == pytest.approx(1.0)
    assert sel["agent_validation_sharpe"] == pytest.approx(0.875)
    assert (sel["variant"], sel["score"]) == ("agent_selected", pytest.approx(1.75))
    no_ensemble = selection([ValidationScores(0, {0: 1.0}, 0, None)])
    assert no_ensemble["variant"] == "agent_selected" and no_ensemble["agent_ensemble_validation_sharpe"] is None


def test_design_winner_is_the_best_mean_validation_score_over_every_data_set():
    from tradebot.rl.walkforward.design_table import Evaluation, pick_winner

    def ev(dataset, design, score):
        return Evaluation(dataset, design, [], {"score": score, "variant": "agent_selected"}, None, None)

    evals = {("a", "x"): ev("a", "x", 1.0), ("b", "x"): ev("b", "x", 0.0), ("a", "y"): ev("a", "y", 0.8),
             ("b", "y"): ev("b", "y", 0.4), ("a", "z"): ev("a", "z", 5.0)}  # z ran on one data set only
    winner, scores = pick_winner(evals)
    assert winner == "y" and scores == {"x": 0.5, "y": pytest.approx(0.6)}
