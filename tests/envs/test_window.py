"""tradebot.envs.window: the backtest window (history for the warm-up, then the traded bars)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tradebot.core.errors import UserInputError
from tradebot.envs.backtest import run_backtest
from tradebot.envs.baselines import BASELINES
from tradebot.envs.engine import Action
from tradebot.envs.engine_config import EngineConfig, load_engine_config
from tradebot.envs.market_data import compute_atr
from tradebot.envs.window import BacktestWindow, first_bar_at_or_after
from tradebot.features.bars import load_bars

SAMPLE_5M = Path(__file__).resolve().parents[2] / "data" / "sample" / "NSE_NIFTY50-INDEX_5m.csv.gz"


@pytest.fixture(scope="module")
def bars():
    return load_bars(SAMPLE_5M).between(None, "2021-03-01")


def test_from_dates_reads_ist_dates_start_included_end_excluded(bars):
    window = BacktestWindow.from_dates(bars, "2021-02-01", "2021-02-08")
    assert window.history.index[-1] < pd.Timestamp("2021-02-08", tz="Asia/Kolkata") <= bars.index[len(window.history)]
    assert window.bars.index[0] == pd.Timestamp("2021-02-01 09:15", tz="Asia/Kolkata")
    assert window.history.index[window.first - 1] < window.bars.index[0]
    assert window.warmup_bars == window.first == first_bar_at_or_after(bars.index, "2021-02-01")
    assert len(window.bars) == len(window.history) - window.first
    whole = BacktestWindow.from_dates(bars)
    assert whole.first == 0 and whole.bars is bars


@pytest.mark.parametrize("start, end, needle", [
    ("2021-02-27", None, "fewer than 2 bars between --start 2021-02-27 and --end the end of the data"),
    ("2021-02-05", "2021-02-05", "fewer than 2 bars"),
    (None, "2020-06-01", "no bars before --end 2020-06-01"),
])
def test_from_dates_refuses_windows_without_two_bars(bars, start, end, needle):
    with pytest.raises(UserInputError, match=needle):
        BacktestWindow.from_dates(bars, start, end)


def test_traded_cuts_history_arrays_and_longer_ones_at_the_history_end(bars):
    window = BacktestWindow.from_dates(bars, "2021-02-01", "2021-02-08")
    per_bar = np.arange(len(bars))
    assert np.array_equal(window.traded(per_bar), per_bar[window.first:len(window.history)])
    assert np.array_equal(window.traded(per_bar[:len(window.history)]), window.traded(per_bar))


def test_run_starts_flat_at_the_first_traded_bar_with_the_histories_atr(bars):
    window = BacktestWindow.from_dates(bars, "2021-02-01", "2021-02-13")
    engine = EngineConfig()
    actions = BASELINES["sma_crossover"](window.history, engine)
    result = window.run(window.traded(actions), engine)
    atr = compute_atr(window.history, engine.atr_period)
    want = run_backtest(window.bars, window.traded(actions), engine, atr=atr[window.first:])
    pd.testing.assert_series_equal(result.equity, want.equity)
    pd.testing.assert_frame_equal(result.trades, want.trades)
    assert result.equity.index[0] == window.bars.index[0] and len(result.trades) > 0
    # the ATR over the traded bars alone is NaN for 14 bars: no entry could fill at the start
    alone = run_backtest(window.bars, window.traded(actions), engine)
    assert not result.equity.equals(alone.equity)


def test_run_baseline_decides_on_the_history_for_intraday_and_on_the_window_for_carried(bars):
    window = BacktestWindow.from_dates(bars, "2021-02-01", "2021-02-13")
    engine = EngineConfig()
    sma = BASELINES["sma_crossover"]
    result, run_config = window.run_baseline(sma, engine, seed=0)
    assert run_config == engine
    want = window.run(window.traded(sma(window.history, engine)), engine)
    pd.testing.assert_frame_equal(result.trades, want.trades)
    # the passive benchmark carries its position: it decides on the traded bars only, starting flat,
    # with the ATR the history gives (as the policy has it): bought at the first traded bar's close
    hold = BASELINES["buy_and_hold"]
    result, run_config = window.run_baseline(hold, engine)
    assert run_config.product == "equity_delivery" and not run_config.flat_at_session_end
    atr = compute_atr(window.history, run_config.atr_period)[window.first:]
    want = run_backtest(window.bars, hold(window.bars, run_config, atr=atr), run_config, atr=atr)
    pd.testing.assert_frame_equal(result.trades, want.trades)
    assert len(result.trades) == 1 and result.trades["entry_time"].iloc[0] == window.bars.index[1]


DAILY = Path(__file__).resolve().parents[2] / "data" / "sample" / "NSE_SBIN-EQ_1d.csv.gz"


@pytest.mark.parametrize("name", ["buy_and_hold", "vol_target_hold"])
def test_carried_baselines_in_a_daily_window_need_no_atr_warm_up_of_their_own(name):
    """On daily bars the ATR's warm-up is three weeks: a window that made the passive benchmark wait
    for it would hand the policy (which knows the history's ATR) those weeks for free."""
    window = BacktestWindow.from_dates(load_bars(DAILY), "2025-04-01", "2025-10-01")
    engine = EngineConfig(product="equity_delivery", exposure=1.0, stop_loss=False, take_profit_atr_mult=None)
    result, run_config = window.run_baseline(BASELINES[name], engine)
    assert run_config.needs_atr and len(result.trades) > 0
    assert result.trades["entry_time"].iloc[0] == window.bars.index[1]  # in from the second bar's open
    alone = run_backtest(window.bars, BASELINES[name](window.bars, run_config), run_config)
    assert alone.trades["entry_time"].iloc[0] >= window.bars.index[14]  # what it was: after the ATR's warm-up


def test_starting_at_session_moves_to_the_next_session_open(bars):
    window = BacktestWindow.from_dates(bars)
    moved = window.starting_at_session(100)
    assert moved.first >= 100 and moved.bars.index[0].strftime("%H:%M") == "09:15"
    assert window.starting_at_session(moved.first).first == moved.first
    last = len(bars) - 1
    assert window.starting_at_session(last).first == last  # no later session: where it was asked


def test_a_window_must_start_inside_its_history(bars):
    with pytest.raises(ValueError):
        BacktestWindow(bars, len(bars))
    assert BacktestWindow(bars, 5).starting_at(7).first == 7


def test_actions_of_a_window_hold_before_the_first_traded_bar(bars):
    window = BacktestWindow.from_dates(bars, "2021-02-01", "2021-02-13")
    actions = np.full(len(window.history), int(Action.BUY_LONG), dtype=np.int8)  # would enter at once
    result = window.run(window.traded(actions), EngineConfig(stop_loss=False, take_profit_atr_mult=None))
    assert result.trades["entry_time"].iloc[0] == window.bars.index[1]  # decided at the first traded bar


def test_load_engine_config_with_a_base_overrides_only_the_keys_the_file_sets(tmp_path):
    path = tmp_path / "engine.yaml"
    path.write_text("engine:\n  slippage_bps: 3.0\n")
    base = EngineConfig(initial_cash=250_000.0, leverage=2.0)
    merged = load_engine_config(path, base=base)
    assert (merged.slippage_bps, merged.initial_cash, merged.leverage) == (3.0, 250_000.0, 2.0)
    assert load_engine_config(path) == EngineConfig(slippage_bps=3.0)
    assert load_engine_config(None, base=base) is base
    path.write_text("engine:\n  carry_overnight: true\n")
    with pytest.raises(UserInputError, match=r"engine.yaml \[engine\]: .*carried overnight"):
        load_engine_config(path, base=base)
