"""Positional products: NRML futures (index and stock) and CNC delivery carry positions across sessions
with their own costs, lots and margins (hand-computed), the instrument catalog resolves lots by date,
and multi-instrument envs trade each instrument with its own costs and lot."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from tradebot.core.errors import UserInputError
from tradebot.envs.backtest import run_backtest
from tradebot.envs.costs import cost_vector, order_charges
from tradebot.envs.engine import Action
from tradebot.envs.engine_config import EngineConfig
from tradebot.envs.instruments import load_catalog
from tradebot.envs.trading_env import BatchedTradingEnv
from tradebot.features.bars import Bars

H, BUY, SHORT, CLOSE_L, CLOSE_S = (int(a) for a in Action)
NO_SLIP = {"slippage_bps": 0.0, "slippage_atr": 0.0, "stop_loss": False, "take_profit_atr_mult": None}


def bars_at(times: list[str], opens: list[float], symbol: str) -> Bars:
    """Bars at the given IST times whose open is ``opens[i]`` (close = open; high/low 1 % around)."""
    o = np.asarray(opens, dtype=float)
    idx = pd.DatetimeIndex(pd.to_datetime(times)).tz_localize("Asia/Kolkata").rename("timestamp")
    df = pd.DataFrame({"open": o, "high": o * 1.01, "low": o * 0.99, "close": o, "volume": 1000.0}, index=idx)
    return Bars.from_frame(df, symbol=symbol)


def five_minute_days(day1: str, day2: str) -> list[str]:
    """The last 18 five-minute bars of ``day1`` (13:55 .. 15:20 ... 15:25) and the first 10 of ``day2``."""
    first = pd.date_range(f"{day1} 13:55", f"{day1} 15:25", freq="5min")
    second = pd.date_range(f"{day2} 09:15", periods=10, freq="5min")
    return [t.strftime("%Y-%m-%d %H:%M") for t in first.append(second)]


def test_index_futures_nrml_carries_overnight_with_catalog_lot_margin_and_costs_hand_computed():
    times = five_minute_days("2022-03-01", "2022-03-02")
    opens = [20000.0] * len(times)
    exit_bar = times.index("2022-03-02 09:40")
    opens[exit_bar] = 20200.0
    bars = bars_at(times, opens, "NSE:NIFTY50-INDEX")
    cfg = EngineConfig(initial_cash=2_500_000.0, product="futures", carry_overnight=True, lot_size="catalog",
                       leverage="catalog", exposure=1.0, **NO_SLIP)
    a = np.zeros(len(bars), dtype=np.int64)
    a[1] = BUY  # decided 14:00, fills 14:05 at 20,000
    a[exit_bar - 1] = CLOSE_L  # fills at 09:40 next day at 20,200
    r = run_backtest(bars, a, cfg)
    assert r.config.product == "index_futures" and r.config.lot_size == 50  # NIFTY lot 50 from 2021-06-25
    assert r.config.effective_leverage == pytest.approx(100 / 15)  # 15 % NRML margin
    t = r.trades.iloc[0]
    # exposure 1.0: 25,00,000 / 20,000 = 125 units -> 2 lots of 50 = 100
    assert (t.qty, t.entry_price, t.exit_price, t.exit_reason) == (100, 20000.0, 20200.0, "signal")
    assert t.entry_time.date() == dt.date(2022, 3, 1) and t.exit_time.date() == dt.date(2022, 3, 2)
    assert (r.positions.loc["2022-03-01 15:25":"2022-03-02 09:35"] == 100).all()  # through square-off and the night
    # buy 20,00,000: brokerage min(20, 600) = 20; exchange 0.00173 % = 34.60; IPFT 2.00; SEBI 2.00; stamp 0.002 % = 40;
    #   GST 18 % x (20 + 34.60 + 2 + 2) = 10.548 -> 109.148
    # sell 20,20,000 (2026 schedule): brokerage 20; STT 0.05 % = 1,010; exchange 34.946; IPFT 2.02; SEBI 2.02;
    #   GST 18 % x (20 + 34.946 + 2.02 + 2.02) = 10.61748 -> 1,079.60348
    assert t.entry_costs == pytest.approx(109.148, abs=1e-6)
    assert t.exit_costs == pytest.approx(1079.60348, abs=1e-6)
    assert t.pnl == pytest.approx(100 * 200 - 109.148 - 1079.60348, abs=1e-6)
    assert r.margin.iloc[5] == pytest.approx(2_000_000 * 0.15)


def test_the_same_futures_position_intraday_mis_is_squared_off_at_1515():
    times = five_minute_days("2022-03-01", "2022-03-02")
    bars = bars_at(times, [20000.0] * len(times), "NSE:NIFTY50-INDEX")
    cfg = EngineConfig(initial_cash=2_500_000.0, product="index_futures", lot_size=50, leverage=5.0, exposure=1.0,
                       **NO_SLIP)
    a = np.zeros(len(bars), dtype=np.int64)
    a[1] = BUY
    t = run_backtest(bars, a, cfg).trades.iloc[0]
    assert t.exit_reason == "square_off" and t.exit_time == pd.Timestamp("2022-03-01 15:15", tz="Asia/Kolkata")


def test_cnc_delivery_on_daily_bars_carries_and_pays_delivery_costs_hand_computed():
    days = ["2022-03-01", "2022-03-02", "2022-03-03", "2022-03-04", "2022-03-07"]
    bars = bars_at(days, [500.0, 500.0, 505.0, 510.0, 520.0], "NSE:SBIN-EQ")
    cfg = EngineConfig(product="equity_delivery", exposure=0.5, **NO_SLIP)
    r = run_backtest(bars, np.array([BUY, H, H, CLOSE_L, H]), cfg)
    t = r.trades.iloc[0]
    assert (t.qty, t.entry_price, t.exit_price) == (1000, 500.0, 520.0)  # 0.5 x 10,00,000 / 500
    assert not r.config.shorts_allowed and list(r.positions) == [0, 1000, 1000, 1000, 0]
    # buy 5,00,000: brokerage min(20, 0.3 % = 1,500) = 20; STT 0.1 % = 500; exchange 0.00297 % = 14.85; IPFT 0.50;
    #   SEBI 0.50; stamp 0.015 % = 75; GST 18 % x (20 + 14.85 + 0.5 + 0.5) = 6.453 -> 617.303
    # sell 5,20,000: brokerage 20; STT 520; exchange 15.444; IPFT 0.52; SEBI 0.52; DP 12.50;
    #   GST 18 % x (20 + 15.444 + 0.52 + 0.52 + 12.5) = 8.81712 -> 577.80112
    assert t.entry_costs == pytest.approx(617.303, abs=1e-6)
    assert t.exit_costs == pytest.approx(577.80112, abs=1e-6)
    assert t.pnl == pytest.approx(1000 * 20 - 617.303 - 577.80112, abs=1e-6)
    assert run_backtest(bars, np.array([SHORT, H, H, H, H]), cfg).invalid_actions == 1  # CNC cannot be shorted


def test_stock_futures_short_carried_for_days_with_lot_margin_and_costs_hand_computed():
    days = ["2022-06-01", "2022-06-02", "2022-06-03", "2022-06-06"]
    bars = bars_at(days, [500.0, 500.0, 490.0, 480.0], "NSE:SBIN-EQ")
    cfg = EngineConfig(product="futures", carry_overnight=True, lot_size="catalog", leverage="catalog",
                       exposure=1.0, **NO_SLIP)
    r = run_backtest(bars, np.array([SHORT, H, CLOSE_S, H]), cfg)
    assert (r.config.product, r.config.lot_size, r.config.effective_leverage) == ("stock_futures", 1500, 5.0)
    t = r.trades.iloc[0]
    # 10,00,000 / 500 = 2,000 units -> one lot of 1,500; short at 500, covered at 480 two sessions later
    assert (t.side, t.qty, t.entry_price, t.exit_price) == ("short", 1500, 500.0, 480.0)
    # sell 7,50,000: brokerage 20; STT 0.05 % = 375; exchange 12.975; IPFT 0.75; SEBI 0.75;
    #   GST 18 % x (20 + 12.975 + 0.75 + 0.75) = 6.2055 -> 415.6805
    # buy 7,20,000: brokerage 20; exchange 12.456; IPFT 0.72; SEBI 0.72; stamp 14.40;
    #   GST 18 % x (20 + 12.456 + 0.72 + 0.72) = 6.10128 -> 54.39728
    assert t.entry_costs == pytest.approx(415.6805, abs=1e-6)
    assert t.exit_costs == pytest.approx(54.39728, abs=1e-6)
    assert t.pnl == pytest.approx(1500 * 20 - 415.6805 - 54.39728, abs=1e-6)
    assert r.margin.iloc[1] == pytest.approx(750_000 / 5.0)
    assert order_charges("stock_futures", 500.0, 1500, "sell")["total"] == pytest.approx(415.6805, abs=1e-6)


def test_catalog_lots_follow_their_dates_and_unknown_symbols_are_one_clear_error():
    cat = load_catalog()
    nifty = cat.futures("NSE:NIFTY50-INDEX", "lot")
    assert [nifty.lot_on(dt.date.fromisoformat(d)) for d in
            ("2021-06-24", "2021-06-25", "2024-04-26", "2024-12-27", "2025-12-31")] == [75, 50, 25, 75, 65]
    assert nifty.lot_on(None) == 65 and nifty.lot_on(dt.date(2010, 1, 1)) == 75
    assert all(e.source for inst in cat.instruments.values() for e in inst.futures.lots)
    cfg = EngineConfig(product="futures", lot_size="catalog", leverage="catalog")
    assert cfg.for_instrument("NSE:RELIANCE-EQ", dt.date(2021, 3, 1)).lot_size == 250
    with pytest.raises(UserInputError, match="not in the instrument catalog"):
        cfg.for_instrument("NSE:NOPE-EQ", None)
    with pytest.raises(UserInputError, match="for_instrument"):
        cfg.params()  # unresolved values never reach the kernel


def test_multi_instrument_env_uses_each_instruments_own_costs_and_lot():
    days = [d.strftime("%Y-%m-%d") for d in pd.bdate_range("2022-05-02", periods=40)]
    index = bars_at(days, list(np.linspace(16000, 16500, 40)), "NSE:NIFTY50-INDEX")
    stock = bars_at(days, list(np.linspace(480, 520, 40)), "NSE:SBIN-EQ")
    feats = [np.zeros((40, 3), dtype=np.float32)] * 2  # the same (trivial) features for both
    cfg = {"engine": {"initial_cash": 2_500_000.0, "product": "futures", "carry_overnight": True,
                      "lot_size": "catalog", "leverage": "catalog", "exposure": 1.0, **NO_SLIP},
           "episode": {"length": 10}}
    env = BatchedTradingEnv([index, stock], num_envs=2, features=feats, atr=[np.ones(40)] * 2, config=cfg)
    assert [(e.product, e.lot_size) for e in env.engines] == [("index_futures", 50), ("stock_futures", 1500)]
    np.testing.assert_array_equal(env._ps[0].costs, cost_vector("index_futures"))
    np.testing.assert_array_equal(env._ps[1].costs, cost_vector("stock_futures"))
    env.reset(seed=0, options={"start": 5})
    _, _, _, _, info = env.step(np.array([BUY, BUY]))
    fill = [index.column("open")[6], stock.column("open")[6]]
    qty = info["position"]
    assert qty[0] == (2_500_000 // fill[0]) // 50 * 50 and qty[1] == (2_500_000 // fill[1]) // 1500 * 1500
    for i, product in enumerate(("index_futures", "stock_futures")):
        assert info["costs"][i] == pytest.approx(order_charges(product, fill[i], qty[i], "buy")["total"], rel=1e-12)
