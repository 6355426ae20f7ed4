"""tradebot.envs.performance: checked against quantstats and empyrical-reloaded, and on hand-computed cases.

Both libraries are given the same per-bar returns, risk-free rate 0 and the same periods per year
(``bars_per_year``). Sortino: ours, quantstats' ``sortino(rf=0)`` and empyrical's
``sortino_ratio(required_return=0)`` all use the target downside deviation below 0 averaged over
all bars, so they must agree; the "std of the negative returns" variant must not.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import empyrical as ep
import numpy as np
import pandas as pd
import pytest
import quantstats.stats as qs_stats
from hypothesis import given, settings
from hypothesis import strategies as st

from tradebot.envs.performance import (
    M,
    Metrics,
    compute_metrics,
    drawdown_series,
    format_metric,
    periods_per_year,
    returns_from_equity,
    worst_window_drawdown,
)
from tradebot.features.bars import load_bars


SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"
SAMPLE_5M = SAMPLE / "NSE_NIFTY50-INDEX_5m.csv.gz"
SAMPLE_1D = SAMPLE / "NSE_SBIN-EQ_1d.csv.gz"
CAPITAL = 100_000.0


def _equity_from_returns(r: np.ndarray, index: pd.DatetimeIndex, capital: float = CAPITAL) -> pd.Series:
    return pd.Series(capital * np.cumprod(1.0 + r), index=index)


def _intraday_index(n: int) -> pd.DatetimeIndex:
    """n five-minute bars laid out in real NSE sessions (75 bars a day, weekdays)."""
    days = pd.bdate_range("2022-01-03", periods=n // 75 + 2, tz="Asia/Kolkata")
    stamps = [d + pd.Timedelta(minutes=9 * 60 + 15 + 5 * k) for d in days for k in range(75)]
    return pd.DatetimeIndex(stamps[:n])


def _check_against_libraries(equity: pd.Series, timeframe: str) -> None:
    ppy = periods_per_year(timeframe)
    m = compute_metrics(equity, timeframe=timeframe, initial_capital=CAPITAL)
    r = returns_from_equity(equity, CAPITAL)
    # quantstats needs an integer periods argument only for display; the arithmetic is the same
    assert m[M.SHARPE] == pytest.approx(qs_stats.sharpe(r, rf=0.0, periods=ppy), rel=1e-9)
    assert m[M.SHARPE] == pytest.approx(ep.sharpe_ratio(r, risk_free=0.0, annualization=ppy), rel=1e-9)
    assert m[M.SORTINO] == pytest.approx(qs_stats.sortino(r, rf=0.0, periods=ppy), rel=1e-9)
    assert m[M.SORTINO] == pytest.approx(ep.sortino_ratio(r, required_return=0.0, annualization=ppy), rel=1e-9)
    assert m[M.MAX_DRAWDOWN] == pytest.approx(qs_stats.max_drawdown(r), rel=1e-9, abs=1e-12)
    assert m[M.MAX_DRAWDOWN] == pytest.approx(ep.max_drawdown(r), rel=1e-9, abs=1e-12)
    assert m[M.CAGR] == pytest.approx(qs_stats.cagr(r, periods=ppy), rel=1e-9)
    assert m[M.CAGR] == pytest.approx(ep.cagr(r, annualization=ppy), rel=1e-9)
    assert m[M.CALMAR] == pytest.approx(qs_stats.calmar(r, periods=ppy), rel=1e-9)
    assert m[M.CALMAR] == pytest.approx(ep.calmar_ratio(r, annualization=ppy), rel=1e-9)
    assert m[M.VOLATILITY] == pytest.approx(ep.annual_volatility(r, annualization=ppy), rel=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_random_returns_match_quantstats_and_empyrical(seed):
    rng = np.random.default_rng(seed)
    n = 3000
    r = rng.normal(0.00005, 0.003, n)
    r[rng.random(n) < 0.4] = 0.0  # flat bars, as when out of the market
    _check_against_libraries(_equity_from_returns(r, _intraday_index(n)), "5m")


def test_metrics_real_5m_returns_match_libraries():
    bars = load_bars(SAMPLE_5M)
    close = bars.frame["close"]
    equity = close / close.iloc[0] * CAPITAL  # buy and hold of the index, marked every bar
    _check_against_libraries(equity, bars.timeframe)


def test_metrics_real_daily_returns_match_libraries():
    bars = load_bars(SAMPLE_1D)
    close = bars.frame["close"]
    _check_against_libraries(close / close.iloc[0] * CAPITAL * 0.97, bars.timeframe)  # a first-bar loss too


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(min_value=-0.05, max_value=0.05, allow_nan=False), min_size=3, max_size=200))
def test_metrics_property_match_empyrical_and_stay_finite(returns):
    r = np.asarray(returns)
    equity = _equity_from_returns(r, _intraday_index(len(r)))
    m = compute_metrics(equity, timeframe="5m", initial_capital=CAPITAL)
    assert all(math.isfinite(v) for v in m.values.values())
    rr = returns_from_equity(equity, CAPITAL)
    ppy = periods_per_year("5m")
    if np.std(r, ddof=1) > 1e-9:  # below that both sides are float noise (we report 0, empyrical nan/huge)
        assert m[M.SHARPE] == pytest.approx(ep.sharpe_ratio(rr, annualization=ppy), rel=1e-6, abs=1e-9)
    if (r < -1e-9).any():
        assert m[M.SORTINO] == pytest.approx(ep.sortino_ratio(rr, annualization=ppy), rel=1e-6, abs=1e-9)
    assert m[M.MAX_DRAWDOWN] == pytest.approx(ep.max_drawdown(rr), rel=1e-6, abs=1e-12)
    assert m[M.WORST_30D_DRAWDOWN] >= m[M.MAX_DRAWDOWN] - 1e-12


def test_sortino_is_target_downside_deviation_not_std_of_losses():
    r = np.array([0.02, -0.01, 0.015, -0.03, 0.0, 0.01, -0.005, 0.02])
    equity = _equity_from_returns(r, _intraday_index(len(r)))
    m = compute_metrics(equity, timeframe="5m", initial_capital=CAPITAL)
    ppy = periods_per_year("5m")
    target_dd = math.sqrt(np.mean(np.minimum(r, 0) ** 2))
    assert m[M.SORTINO] == pytest.approx(r.mean() / target_dd * math.sqrt(ppy), rel=1e-9)
    std_of_losses = np.std(r[r < 0], ddof=1)
    assert m[M.SORTINO] != pytest.approx(r.mean() / std_of_losses * math.sqrt(ppy), rel=1e-3)


def test_periods_per_year_follow_nse_sessions():
    assert periods_per_year("1m") == 375 * 252
    assert periods_per_year("5m") == 75 * 252
    assert periods_per_year("15m") == 25 * 252
    assert periods_per_year("1h") == 7 * 252  # 6 full hours and the 15:15-15:30 stub
    assert periods_per_year("1d") == 252


def test_trade_statistics_hand_computed():
    idx = _intraday_index(4)
    equity = pd.Series([CAPITAL, CAPITAL + 10, CAPITAL + 60, CAPITAL + 60], index=idx)
    pnl = [100.0, -50.0, 30.0, -20.0, 0.0]
    m = compute_metrics(equity, timeframe="5m", initial_capital=CAPITAL, trade_pnl=pnl,
                        positions=[0, 1, -1, 0], traded_notional=400_000.0, costs=123.0, invalid_actions=2)
    assert m[M.TRADES] == 5
    assert m[M.WIN_RATE] == pytest.approx(2 / 5)  # a zero-P&L trade is not a win
    assert m[M.PROFIT_FACTOR] == pytest.approx(130 / 70)
    assert m[M.EXPECTANCY] == pytest.approx(60 / 5)
    assert m[M.AVG_WIN] == pytest.approx(65.0)
    assert m[M.AVG_LOSS] == pytest.approx(-35.0)
    assert m[M.EXPOSURE] == pytest.approx(0.5)
    assert m[M.TURNOVER] == pytest.approx(400_000.0 / equity.mean())
    assert m[M.COSTS] == 123.0 and m[M.COSTS_PCT] == pytest.approx(123.0 / CAPITAL)
    assert m[M.INVALID_ACTIONS] == 2 and m[M.BARS] == 4
    assert m[M.TOTAL_RETURN] == pytest.approx(60 / CAPITAL)
    assert m[M.FINAL_EQUITY] == CAPITAL + 60


def test_worst_30_day_drawdown_hand_computed():
    # 100 on day 0, falling 0.5 a day for 60 days to 70, then flat: max drawdown -30 %; within any
    # 30 calendar days the fall is 15 points, worst when it ends at 70: 70 / 85 - 1.
    days = pd.date_range("2022-01-01", periods=91, freq="D", tz="Asia/Kolkata")
    values = np.concatenate([100 - 0.5 * np.arange(61), np.full(30, 70.0)])
    equity = pd.Series(values, index=days)
    m = compute_metrics(equity, timeframe="1d", initial_capital=100.0)
    assert m[M.MAX_DRAWDOWN] == pytest.approx(-0.30)
    assert m[M.WORST_30D_DRAWDOWN] == pytest.approx(70 / 85 - 1)
    w = worst_window_drawdown(equity, 30, initial_capital=100.0)
    assert w.trough == days[60] and w.peak == days[30]


def test_worst_30_day_drawdown_equals_max_when_the_fall_is_fast():
    days = pd.date_range("2022-01-01", periods=100, freq="D", tz="Asia/Kolkata")
    values = np.full(100, 100.0)
    values[50:] = 80.0
    values[52:] = 60.0  # -40 % within two days, recovers to nothing
    m = compute_metrics(pd.Series(values, index=days), timeframe="1d", initial_capital=100.0)
    assert m[M.MAX_DRAWDOWN] == pytest.approx(-0.40)
    assert m[M.WORST_30D_DRAWDOWN] == pytest.approx(-0.40)


def test_worst_30_day_window_ignores_a_peak_older_than_30_days():
    days = pd.to_datetime(["2022-01-03", "2022-02-14", "2022-02-15"]).tz_localize("Asia/Kolkata")
    equity = pd.Series([100.0, 90.0, 85.0], index=days)  # the 100 peak is 42 days before the trough
    m = compute_metrics(equity, timeframe="1d", initial_capital=100.0)
    assert m[M.MAX_DRAWDOWN] == pytest.approx(-0.15)
    assert m[M.WORST_30D_DRAWDOWN] == pytest.approx(85 / 90 - 1)


def test_first_bar_loss_counts_against_initial_capital():
    equity = pd.Series([95.0, 96.0, 97.0], index=_intraday_index(3))
    m = compute_metrics(equity, timeframe="5m", initial_capital=100.0)
    assert m[M.MAX_DRAWDOWN] == pytest.approx(-0.05)
    assert m[M.TOTAL_RETURN] == pytest.approx(-0.03)
    assert drawdown_series(equity, 100.0).iloc[0] == pytest.approx(-0.05)


def test_flat_equity_no_trades_reports_zeros_with_notes():
    equity = pd.Series(np.full(500, CAPITAL), index=_intraday_index(500))
    m = compute_metrics(equity, timeframe="5m", initial_capital=CAPITAL, trade_pnl=[], positions=np.zeros(500))
    assert all(v == 0.0 for k, v in m.items() if k not in (M.FINAL_EQUITY, M.BARS))
    assert m[M.FINAL_EQUITY] == CAPITAL and m[M.BARS] == 500
    joined = " ".join(m.notes)
    assert M.SHARPE in joined and M.SORTINO in joined and "no closed trades" in joined and M.CALMAR in joined
    json.dumps(m.to_dict(), allow_nan=False)


def test_single_bar_and_empty_equity_never_crash():
    one = pd.Series([CAPITAL * 1.01], index=_intraday_index(1))
    m = compute_metrics(one, timeframe="5m", initial_capital=CAPITAL)
    assert m[M.TOTAL_RETURN] == pytest.approx(0.01)
    assert m[M.SHARPE] == 0.0 and any("fewer than two" in n for n in m.notes)
    assert all(math.isfinite(v) for v in m.values.values())
    m = compute_metrics(one, timeframe="5m")  # no initial capital: no return at all
    assert m[M.SHARPE] == 0.0 and m[M.CAGR] == 0.0 and m[M.TOTAL_RETURN] == 0.0
    empty = pd.Series([], dtype="float64", index=pd.DatetimeIndex([], tz="Asia/Kolkata"))
    m = compute_metrics(empty, timeframe="5m", initial_capital=CAPITAL)
    assert isinstance(m, Metrics) and m[M.BARS] == 0 and m[M.FINAL_EQUITY] == CAPITAL


def test_only_winning_trades_profit_factor_inf_with_note_and_null_in_json():
    equity = pd.Series([CAPITAL, CAPITAL + 5], index=_intraday_index(2))
    m = compute_metrics(equity, timeframe="5m", initial_capital=CAPITAL, trade_pnl=[5.0])
    assert m[M.PROFIT_FACTOR] == math.inf and m[M.WIN_RATE] == 1.0
    assert any(M.PROFIT_FACTOR in n and "inf" in n for n in m.notes)
    assert format_metric(M.PROFIT_FACTOR, m[M.PROFIT_FACTOR]) == "inf"
    text = json.dumps(m.to_dict(), allow_nan=False)  # JSON has no infinity: null
    assert json.loads(text)["metrics"][M.PROFIT_FACTOR] is None
    assert Metrics.from_dict(json.loads(text)).values == m.values  # and reads back as inf
    assert all(math.isfinite(v) for k, v in m.items() if k != M.PROFIT_FACTOR)


@pytest.mark.parametrize("pnl", [[100.0, -50.0, 30.0, -20.0, 0.0], [5.0, 3.0], [5.0, 0.0], [0.0, 0.0], [-4.0],
                                 [0.0], []])
def test_profit_factor_matches_quantstats_on_the_trade_pnl(pnl):
    """quantstats' profit factor of a P&L series (no price-to-return conversion): inf without a loss,
    0 without a win or a loss."""
    equity = pd.Series([CAPITAL, CAPITAL + 1], index=_intraday_index(2))
    m = compute_metrics(equity, timeframe="5m", initial_capital=CAPITAL, trade_pnl=pnl)
    want = qs_stats.profit_factor(pd.Series(pnl, dtype="float64"), prepare_returns=False)
    assert m[M.PROFIT_FACTOR] == pytest.approx(want, rel=1e-12)


def test_breakeven_trades_profit_factor_zero_with_note():
    equity = pd.Series([CAPITAL, CAPITAL], index=_intraday_index(2))
    m = compute_metrics(equity, timeframe="5m", initial_capital=CAPITAL, trade_pnl=[0.0, 0.0])
    assert m[M.PROFIT_FACTOR] == 0.0 and m[M.TRADES] == 2
    assert any(M.PROFIT_FACTOR in n and "broke even" in n for n in m.notes)


def test_wiped_out_account_stays_finite():
    equity = pd.Series([50.0, 0.0, 0.0, 0.0], index=_intraday_index(4))
    m = compute_metrics(equity, timeframe="5m", initial_capital=100.0)
    assert m[M.MAX_DRAWDOWN] == pytest.approx(-1.0)
    assert m[M.CAGR] == -1.0
    assert all(math.isfinite(v) for v in m.values.values())


def test_metric_keys_are_the_constants_in_order():
    equity = pd.Series([CAPITAL, CAPITAL + 1], index=_intraday_index(2))
    m = compute_metrics(equity, timeframe="5m", initial_capital=CAPITAL)
    assert tuple(m) == M.ALL
    assert M.SHARPE == "sharpe" and set(M.KEY) <= set(M.ALL)


def test_metrics_from_backtest_result_agree_with_the_result():
    from tradebot.envs.backtest import run_backtest
    from tradebot.envs.baselines import BASELINES
    from tradebot.envs.performance import metrics_from_result

    bars = load_bars(SAMPLE_5M).slice(0, 3000)
    result = run_backtest(bars, BASELINES["sma_crossover"](bars), None)
    m = metrics_from_result(result, bars.timeframe)
    capital = result.config.initial_cash
    assert m[M.TOTAL_RETURN] == pytest.approx(result.total_return)
    assert m[M.FINAL_EQUITY] == pytest.approx(result.final_equity)
    assert m[M.TRADES] == len(result.trades) > 0
    assert m[M.COSTS] == pytest.approx(result.costs_total) and m[M.COSTS] == pytest.approx(result.trades["costs"].sum())
    assert m[M.EXPOSURE] == pytest.approx(float((result.positions != 0).mean()))
    assert m[M.EXPECTANCY] * m[M.TRADES] == pytest.approx(result.final_equity - capital, rel=1e-6)
    notional = (result.trades["qty"] * (result.trades["entry_price"] + result.trades["exit_price"])).sum()
    assert m[M.TURNOVER] == pytest.approx(notional / result.equity.mean())
    assert m[M.INVALID_ACTIONS] == result.invalid_actions
    r = returns_from_equity(result.equity, capital)
    ppy = periods_per_year(bars.timeframe)
    assert m[M.SHARPE] == pytest.approx(ep.sharpe_ratio(r, annualization=ppy), rel=1e-9)
    assert m[M.SORTINO] == pytest.approx(qs_stats.sortino(r, rf=0.0, periods=ppy), rel=1e-9)
    assert m[M.MAX_DRAWDOWN] == pytest.approx(ep.max_drawdown(r), rel=1e-9)


def test_cagr_of_a_few_bars_that_overflows_is_zero_with_note():
    equity = _equity_from_returns(np.array([0.03125, 0.046875, 0.046875]), _intraday_index(3))
    m = compute_metrics(equity, timeframe="5m", initial_capital=CAPITAL)
    assert m[M.CAGR] == 0.0 and any(M.CAGR in n and "overflow" in n for n in m.notes)
    assert all(math.isfinite(v) for v in m.values.values())
