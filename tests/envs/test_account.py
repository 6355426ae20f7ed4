"""tradebot.envs.account / fill_rules / market_data: the Python views over the engine's arrays agree with
the kernels they wrap (one bar at a time equals the backtester)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tradebot.core.nse_time import bar_end, bar_start_for, ist_day, last_of_session_by_clock, session_day
from tradebot.envs.account import EngineAccount, refused_entry_reason
from tradebot.envs.backtest import run_backtest
from tradebot.envs.baselines import BASELINES
from tradebot.envs.engine import Action, ExitReason, order_cost, position_size, slipped
from tradebot.envs.engine_config import EngineConfig
from tradebot.envs.fill_rules import FillRules
from tradebot.envs.market_data import D_FLAGS, FLAG_LAST_OF_SESSION, compute_atr, market_data, market_row
from tradebot.features.bars import load_bars

SAMPLE_5M = Path(__file__).resolve().parents[2] / "data" / "sample" / "NSE_NIFTY50-INDEX_5m.csv.gz"


@pytest.fixture(scope="module")
def bars():
    return load_bars(SAMPLE_5M).slice(0, 2500)


@dataclass
class _Bar:
    ts: int
    open: float
    high: float
    low: float
    close: float
    timeframe: str
    last_of_session: bool


def _rows(bars, config, atr):
    """Each bar's row as a live feed builds it: market_row, the last-of-session flag from the data."""
    data = market_data(bars, config, atr)
    ns = bars.index.as_unit("ns").asi8
    f = bars.frame
    return [market_row(_Bar(int(ns[t]), f["open"].iloc[t], f["high"].iloc[t], f["low"].iloc[t], f["close"].iloc[t],
                            bars.timeframe, bool(int(data[t, D_FLAGS]) & FLAG_LAST_OF_SESSION)), atr[t], config)
            for t in range(len(bars))]


def test_market_row_of_each_bar_equals_the_series_row(bars):
    config = EngineConfig()
    atr = compute_atr(bars, config.atr_period)
    data = market_data(bars, config, atr)
    np.testing.assert_array_equal(np.vstack(_rows(bars, config, atr)), data)


def test_stepping_an_account_bar_by_bar_equals_the_backtest(bars):
    config = EngineConfig()
    rules = FillRules(config)
    atr = compute_atr(bars, config.atr_period)
    actions = BASELINES["sma_crossover"](bars, config)
    want = run_backtest(bars, actions, config)
    account, prev, closed, equity = EngineAccount.new(rules), None, [], []
    for t, row in enumerate(_rows(bars, config, atr)):
        equity.append(account.step(prev, row, int(actions[t - 1]) if t else int(Action.HOLD), rules,
                                   final=t == len(bars) - 1))
        account.renumber(t)
        if (trade := account.closed_trade) is not None:
            closed.append(trade)
        prev = row
    np.testing.assert_array_equal(np.array(equity), want.equity.to_numpy())
    trades = want.trades
    assert len(closed) == len(trades) > 50
    assert [c.pnl for c in closed] == list(trades["pnl"]) and [c.exit_kind for c in closed] == list(
        trades["exit_reason"].astype(str))
    assert [c.qty for c in closed] == list(trades["qty"]) and [c.side for c in closed] == list(
        np.where(trades["side"] == "long", 1.0, -1.0))
    assert account.trades == len(trades) and account.bar == len(bars) - 1
    assert account.equity == pytest.approx(want.final_equity) and account.qty == 0.0
    assert account.costs_total == pytest.approx(want.costs_total) and account.invalid_actions == want.invalid_actions
    assert account.realized_pnl == pytest.approx(float(trades["pnl"].sum()))


def test_account_fields_bytes_round_trip_and_a_refused_entry_is_explained(bars):
    config = EngineConfig(stop_loss=True, take_profit_atr_mult=None)
    rules = FillRules(config)
    atr = compute_atr(bars, config.atr_period)
    rows = _rows(bars, config, atr)
    account = EngineAccount.new(rules)
    assert (account.cash, account.equity, account.qty, account.bar) == (config.initial_cash, config.initial_cash,
                                                                       0.0, -1)
    assert math.isnan(account.entry_price) and account.closed_trade is None
    # no ATR before the second bar: the engine cannot size the entry
    before = account.copy()
    account.step(rows[0], rows[1], int(Action.BUY_LONG), rules)
    assert account.qty == 0.0 and account.invalid_actions == 1
    assert refused_entry_reason(before, rows[0], rows[1], False, rules).startswith("no ATR known")
    t = 40  # ATR known: a long fills at the open with its stop 2 ATR below
    account.step(rows[t - 1], rows[t], int(Action.BUY_LONG), rules)
    account.renumber(t, entry_bar=t)
    assert account.qty > 0 and account.entry_bar == t and account.bar == t
    assert account.stop_price == pytest.approx(account.entry_price - 2.0 * atr[t - 1])
    assert math.isnan(account.take_profit_price) and account.margin > 0 and account.entry_costs > 0
    copy = EngineAccount.from_bytes(account.to_bytes())
    np.testing.assert_array_equal(copy.state, account.state)
    assert refused_entry_reason(account, rows[t], rows[t + 1], False, rules) == "position not flat at the fill"
    account.step(rows[t], rows[t + 1], int(Action.CLOSE_LONG), rules)
    trade = account.closed_trade
    assert trade is not None and trade.reason is ExitReason.SIGNAL and trade.exit_bar == 1  # the kernel's numbering
    assert trade.pnl == pytest.approx(trade.gross_pnl - trade.entry_costs - trade.exit_costs)
    with pytest.raises(ValueError):
        EngineAccount(np.zeros(3))


def test_fill_rules_are_the_kernels_numbers():
    config = EngineConfig(max_notional=50_000.0, take_profit_atr_mult=3.0)
    rules = FillRules(config)
    params, costs = config.params(), config.cost_vector()
    assert rules.fill_price(100.0, 1.0, 2.0) == slipped(100.0, 1.0, 2.0, params) > 100.0
    assert rules.fill_price(100.0, -1.0, 2.0) < 100.0
    assert rules.order_cost(100.0, 10.0, True) == order_cost(costs, 100.0, 10.0, True) > 0
    capped = rules.position_size(1_000_000.0, 2.0, 100.0)
    assert capped == position_size(1_000_000.0, 2.0, 100.0, params) == 500.0  # the notional cap
    assert rules.position_size(1_000_000.0, 2.0, 100.0, margin_caps=False) == 2_500.0  # 1 % risk at a 4-point stop
    assert rules.stop_distance(2.0) == 4.0 and rules.take_profit_distance(2.0) == 6.0
    assert rules.lot == 1.0 and rules.shorts_allowed
    assert not FillRules(EngineConfig(product="equity_delivery")).shorts_allowed
    assert FillRules(EngineConfig(take_profit_atr_mult=None)).take_profit_distance(2.0) == 0.0


def test_fill_rules_for_an_order_take_its_size_and_brackets():
    config = EngineConfig()
    rules = FillRules(config)
    atr = 1.7
    same = rules.for_order(25.0, rules.stop_distance(atr), rules.take_profit_distance(atr), atr)
    assert same.position_size(1e6, atr, 100.0) == 25.0
    assert same.stop_distance(atr) == rules.stop_distance(atr)  # the config's own multiple, bit for bit
    other = rules.for_order(25.0, 5.0, None, atr)
    assert other.stop_distance(atr) == pytest.approx(5.0)
    assert other.take_profit_distance(atr) == rules.take_profit_distance(atr)
    no_atr = rules.for_order(25.0, 5.0, 8.0, math.nan)  # no ATR yet: the config's brackets
    assert no_atr.stop_distance(atr) == rules.stop_distance(atr)
    assert rules.position_size(1e6, atr, 100.0) != 25.0  # the base rules are left alone


def test_nse_time_on_epoch_ns_agrees_with_the_index_helpers(bars):
    ns = bars.index.as_unit("ns").asi8
    assert [ist_day(v) for v in ns[:200]] == list(session_day(bars.index[:200]))
    for v in ns[:200]:
        assert bar_start_for(int(v), "5m") == int(v)
        assert bar_end(int(v), "5m") == int(v) + 300 * 10**9
    last = [last_of_session_by_clock(bar_end(int(v), "5m")) for v in ns[:150]]
    assert sum(last) == 2 and last[74] and last[149]  # 15:25 is the last 5-minute bar of each session
