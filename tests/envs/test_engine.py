"""Fill engine and backtester: hand-computed fills, SL/TP ordering, square-off, sizing, invariants."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from tradebot.envs.backtest import TRADE_COLUMNS, run_backtest, run_signals
from tradebot.envs.costs import order_charges
from tradebot.envs.engine import ACTION_NAMES, Action
from tradebot.envs.engine_config import EngineConfig
from tradebot.envs.market_data import session_layout
from tradebot.features.bars import Bars, load_bars
from tradebot.core.nse_time import minute_of_day, session_day
from tradebot.core.errors import UserInputError

H, BUY, SHORT, CLOSE_L, CLOSE_S = (int(a) for a in Action)
SAMPLE_5M = "data/sample/NSE_NIFTY50-INDEX_5m.csv.gz"


def make_bars(rows, start="2024-01-01 09:15", freq="5min", timestamps=None) -> Bars:
    """Bars from (open, high, low, close) rows at consecutive ``freq`` steps from ``start`` (IST)."""
    if timestamps is None:
        idx = pd.date_range(start, periods=len(rows), freq=freq, tz="Asia/Kolkata")
    else:
        idx = pd.DatetimeIndex(pd.to_datetime(timestamps)).tz_localize("Asia/Kolkata")
    df = pd.DataFrame(rows, columns=["open", "high", "low", "close"], index=idx.rename("timestamp"))
    df["volume"] = 0.0
    return Bars.from_frame(df)


def frictionless(**kw) -> EngineConfig:
    """Delivery, no costs/slippage, 10 units, stop 2 ATR and take-profit 3 ATR unless overridden."""
    return EngineConfig.frictionless(fixed_qty=10, **{"stop_loss": True, "take_profit_atr_mult": 3.0, **kw})


def shorting(**kw) -> EngineConfig:
    """Frictionless futures account that may short and carries positions."""
    return frictionless(**{"product": "index_futures", "carry_overnight": True, "allow_short": True, **kw})


def acts(n, **at) -> np.ndarray:
    a = np.zeros(n, dtype=np.int64)
    for i, v in at.items():
        a[int(i[1:])] = v
    return a


FLAT = (100.0, 100.5, 99.5, 100.0)


def test_action_values_and_names():
    assert [int(a) for a in Action] == [0, 1, 2, 3, 4]
    assert ACTION_NAMES == ("HOLD", "BUY_LONG", "SELL_SHORT", "CLOSE_LONG", "CLOSE_SHORT")


def test_entry_fills_at_next_open_with_slippage_hand_computed():
    # Decided at bar 0, fills at bar 1's open 101: buy pays 101 x (1 + 10 bp) + 0.5 x ATR(1.0) = 101.601
    bars = make_bars([FLAT, (101.0, 101.5, 100.5, 101.0), FLAT, FLAT])
    cfg = frictionless(slippage_bps=10.0, slippage_atr=0.5, stop_loss=False, take_profit_atr_mult=None)
    r = run_backtest(bars, acts(4, a0=BUY, a2=CLOSE_L), cfg, atr=np.ones(4))
    t = r.trades.iloc[0]
    assert t.entry_bar == 1 and t.entry_time == bars.index[1]
    assert t.entry_price == pytest.approx(101.0 * 1.001 + 0.5)
    # Close decided at bar 2 fills at bar 3's open 100: sell receives 100 x 0.999 - 0.5 = 99.4
    assert t.exit_bar == 3 and t.exit_price == pytest.approx(99.4) and t.exit_reason == "signal"
    assert t.pnl == pytest.approx(10 * (99.4 - 101.601))


def test_stop_and_take_profit_both_touched_assumes_stop_first():
    # Entry 100 at bar 1's open, ATR 1: stop 98, take-profit 103. Bar 1 trades 97..104: stop at 98.
    bars = make_bars([FLAT, (100.0, 104.0, 97.0, 101.0), FLAT])
    r = run_backtest(bars, acts(3, a0=BUY), frictionless(), atr=np.ones(3))
    t = r.trades.iloc[0]
    assert (t.stop_price, t.take_profit_price) == (98.0, 103.0)
    assert t.exit_reason == "stop" and t.exit_price == 98.0 and t.exit_bar == 1
    assert t.pnl == pytest.approx(10 * (98.0 - 100.0))


def test_stop_hit_in_the_entry_bar_after_the_open():
    bars = make_bars([FLAT, (100.0, 100.5, 97.5, 98.0), FLAT])
    r = run_backtest(bars, acts(3, a0=BUY), frictionless(), atr=np.ones(3))
    t = r.trades.iloc[0]
    assert t.exit_reason == "stop" and t.exit_price == 98.0 and t.bars_held == 0


def test_gap_through_stop_fills_at_open_with_slippage():
    # Entry 100 x 1.001 + 0.5 = 100.6, stop 100.6 - 2 = 98.6. Bar 2 opens at 95 (below the stop):
    # sell at 95 x 0.999 - 0.5 x ATR(1) = 94.405.
    bars = make_bars([FLAT, FLAT, (95.0, 96.0, 94.0, 95.5), FLAT])
    cfg = frictionless(slippage_bps=10.0, slippage_atr=0.5)
    r = run_backtest(bars, acts(4, a0=BUY), cfg, atr=np.ones(4))
    t = r.trades.iloc[0]
    assert t.stop_price == pytest.approx(98.6)
    assert t.exit_reason == "stop" and t.exit_bar == 2 and t.exit_price == pytest.approx(94.405)


def test_gap_through_take_profit_fills_at_open_without_slippage():
    bars = make_bars([FLAT, FLAT, (105.0, 106.0, 104.5, 105.5), FLAT])
    r = run_backtest(bars, acts(4, a0=BUY), frictionless(slippage_bps=10.0, slippage_atr=0.5), atr=np.ones(4))
    t = r.trades.iloc[0]
    assert t.exit_reason == "take_profit" and t.exit_bar == 2 and t.exit_price == 105.0


def test_take_profit_inside_bar_fills_at_its_price():
    bars = make_bars([FLAT, FLAT, (101.0, 103.5, 100.5, 103.0), FLAT])
    r = run_backtest(bars, acts(4, a0=BUY), frictionless(), atr=np.ones(4))
    t = r.trades.iloc[0]
    assert t.exit_reason == "take_profit" and t.exit_price == 103.0


def test_short_stop_and_target_mirror_long():
    # Short at 100: stop 102, take-profit 97. Bar 1 trades 96..103: stop first, at 102.
    bars = make_bars([FLAT, (100.0, 103.0, 96.0, 99.0), FLAT])
    r = run_backtest(bars, acts(3, a0=SHORT), shorting(), atr=np.ones(3))
    t = r.trades.iloc[0]
    assert t.side == "short" and t.exit_reason == "stop" and t.exit_price == 102.0
    assert t.pnl == pytest.approx(-10 * (102.0 - 100.0))
    # gap down through the target: buy back at the open 95
    bars = make_bars([FLAT, FLAT, (95.0, 95.5, 94.0, 95.0), FLAT])
    t = run_backtest(bars, acts(4, a0=SHORT), shorting(), atr=np.ones(4)).trades.iloc[0]
    assert t.exit_reason == "take_profit" and t.exit_price == 95.0 and t.pnl == pytest.approx(50.0)


def test_close_already_done_by_gap_stop_is_not_invalid():
    bars = make_bars([FLAT, FLAT, (95.0, 96.0, 94.0, 95.5), FLAT])
    r = run_backtest(bars, acts(4, a0=BUY, a1=CLOSE_L), frictionless(), atr=np.ones(4))
    assert r.trades.iloc[0].exit_reason == "stop" and r.invalid_actions == 0


def test_invalid_actions_are_counted_no_ops():
    bars = make_bars([FLAT] * 8)
    # close while flat, buy while long, short while long, close-short while long -> 4 invalid
    a = acts(8, a0=CLOSE_L, a1=BUY, a2=BUY, a3=SHORT, a4=CLOSE_S, a5=CLOSE_L)
    r = run_backtest(bars, a, frictionless(), atr=np.ones(8))
    assert r.invalid_actions == 4 and len(r.trades) == 1
    # shorting disabled, and never on delivery
    r = run_backtest(bars, acts(8, a0=SHORT), shorting(allow_short=False), atr=np.ones(8))
    assert r.invalid_actions == 1 and r.trades.empty
    r = run_backtest(bars, acts(8, a0=SHORT), frictionless(allow_short=True), atr=np.ones(8))
    assert r.invalid_actions == 1 and r.trades.empty


def test_entry_with_unknown_atr_is_invalid():
    bars = make_bars([FLAT] * 4)
    atr = np.array([np.nan, 1.0, 1.0, 1.0])
    r = run_backtest(bars, acts(4, a0=BUY, a1=BUY), frictionless(), atr=atr)
    assert r.invalid_actions == 1 and r.trades.iloc[0].entry_bar == 2


def test_risk_sizing_hand_computed_and_caps():
    bars = make_bars([(1000.0, 1001.0, 999.0, 1000.0)] * 4)
    base = dict(costs=False, slippage_bps=0.0, slippage_atr=0.0, stop_loss=False, take_profit_atr_mult=None)
    atr = np.full(4, 10.0)

    def qty(**kw) -> float:
        r = run_backtest(bars, acts(4, a0=BUY), EngineConfig(**{**base, **kw}), atr=atr)
        return r.trades.iloc[0].qty if len(r.trades) else 0.0

    # 1% of 10,00,000 = 10,000 at risk / (2 x ATR 10 = 20 per share) = 500 shares (Rs 5 L <= 5 x equity)
    assert qty() == 500
    assert qty(lot_size=75) == 450  # floor(500 / 75) x 75
    assert qty(max_notional=300_000.0) == 300  # 3 L / 1000
    assert qty(risk_per_trade=0.2) == 5000  # 2 L / 20 = 10,000 shares, capped at 5 x 10 L / 1000
    assert qty(risk_per_trade=0.2, product="equity_delivery") == 1000  # delivery: no leverage
    r = run_backtest(bars, acts(4, a0=BUY), EngineConfig(**base, lot_size=1000), atr=atr)
    assert r.trades.empty and r.invalid_actions == 1  # sized to zero lots: no trade


def test_engine_costs_match_cost_model():
    bars = make_bars([FLAT, (101.0, 101.5, 100.5, 101.0), FLAT, FLAT])
    cfg = EngineConfig(stop_loss=False, take_profit_atr_mult=None)
    r = run_backtest(bars, acts(4, a0=BUY, a1=CLOSE_L), cfg, atr=np.ones(4))
    t = r.trades.iloc[0]
    assert t.entry_costs == pytest.approx(order_charges("equity_intraday", t.entry_price, t.qty, "buy")["total"])
    assert t.exit_costs == pytest.approx(order_charges("equity_intraday", t.exit_price, t.qty, "sell")["total"])
    assert r.costs_total == pytest.approx(t.costs)
    assert t.pnl == pytest.approx(t.gross_pnl - t.costs)


def _intraday_cfg(**kw) -> EngineConfig:
    return EngineConfig(costs=False, slippage_bps=0.0, slippage_atr=0.0, fixed_qty=10, stop_loss=False,
                        take_profit_atr_mult=None, **kw)


def test_square_off_closes_at_open_of_first_bar_at_or_after_1515_and_blocks_entries():
    bars = make_bars([(100.0 + i, 100.5 + i, 99.5 + i, 100.0 + i) for i in range(7)], start="2024-01-01 14:55")
    r = run_backtest(bars, acts(7, a0=BUY), _intraday_cfg(), atr=np.ones(7))
    t = r.trades.iloc[0]
    assert t.entry_time.strftime("%H:%M") == "15:00"
    assert t.exit_time.strftime("%H:%M") == "15:15" and t.exit_reason == "square_off" and t.exit_price == 104.0
    # an entry decided at 15:10 would fill at 15:15: refused and counted
    r = run_backtest(bars, acts(7, a3=BUY), _intraday_cfg(), atr=np.ones(7))
    assert r.trades.empty and r.invalid_actions == 1
    # another square-off time
    r = run_backtest(bars, acts(7, a0=BUY), _intraday_cfg(square_off="15:05"), atr=np.ones(7))
    assert r.trades.iloc[0].exit_time.strftime("%H:%M") == "15:05"


def test_short_session_closes_at_its_last_close_and_next_session_starts_flat():
    stamps = ["2024-02-24 09:15", "2024-02-24 09:20", "2024-02-24 09:25", "2024-02-24 09:30",
              "2024-02-26 09:15", "2024-02-26 09:20"]
    rows = [(100.0, 106.0, 99.0, 100.0 + i) for i in range(6)]
    bars = make_bars(rows, timestamps=stamps)
    r = run_backtest(bars, acts(6, a0=BUY), _intraday_cfg(), atr=np.ones(6))
    t = r.trades.iloc[0]
    assert t.exit_bar == 3 and t.exit_price == 103.0 and t.exit_reason == "square_off"
    assert r.positions.iloc[4] == 0
    # with square_off disabled an intraday product still ends each session flat
    r = run_backtest(bars, acts(6, a0=BUY), _intraday_cfg(square_off=None), atr=np.ones(6))
    assert r.trades.iloc[0].exit_bar == 3


def test_daily_bars_delivery_carries_and_intraday_trades_open_to_close():
    bars = make_bars([(100.0 + i, 101.0 + i, 99.0 + i, 100.5 + i) for i in range(5)], freq="1D")
    assert bars.timeframe == "1d"
    delivery = _intraday_cfg(product="equity_delivery")
    r = run_backtest(bars, acts(5, a0=BUY), delivery, atr=np.ones(5))
    assert list(r.positions) == [0, 10, 10, 10, 0]
    assert r.trades.iloc[0].exit_reason == "end_of_data" and r.trades.iloc[0].exit_price == 104.5
    r = run_backtest(bars, acts(5, a0=BUY), _intraday_cfg(), atr=np.ones(5))
    t = r.trades.iloc[0]
    assert (t.entry_bar, t.exit_bar, t.entry_price, t.exit_price) == (1, 1, 101.0, 101.5)


def test_run_signals_matches_run_backtest_on_equivalent_actions():
    bars = load_bars(SAMPLE_5M).slice(0, 600)
    rng = np.random.default_rng(3)
    entries = rng.random(600) < 0.05
    exits = rng.random(600) < 0.05
    sig = run_signals(bars, entries, exits)
    # replay: the action at bar t follows from the signals and the position after bar t
    a = np.zeros(600, dtype=np.int64)
    pos = sig.positions.to_numpy()
    for t in range(600):
        if pos[t] == 0 and entries[t] and not exits[t]:
            a[t] = BUY
        elif pos[t] > 0 and exits[t]:
            a[t] = CLOSE_L
    act = run_backtest(bars, a)
    pd.testing.assert_series_equal(sig.equity, act.equity)
    pd.testing.assert_frame_equal(sig.trades, act.trades)
    assert sig.invalid_actions == 0


def test_realized_unrealized_pnl_and_margin_hand_computed():
    # Long 10 at 100 (bar 1), closes 101, 102, exit at bar 3's open 103: frictionless, leverage 1.
    bars = make_bars([FLAT, (100.0, 101.5, 99.8, 101.0), (101.0, 102.5, 100.8, 102.0), (103.0, 103.5, 102.5, 103.0)])
    cfg = frictionless(stop_loss=False, take_profit_atr_mult=None)
    r = run_backtest(bars, acts(4, a0=BUY, a2=CLOSE_L), cfg, atr=np.ones(4))
    assert list(r.realized_pnl) == [0.0, 0.0, 0.0, 30.0]
    assert list(r.unrealized_pnl) == [0.0, 10.0, 20.0, 0.0]
    assert list(r.margin) == [0.0, 1000.0, 1000.0, 0.0]
    assert list(r.cash) == [cfg.initial_cash, cfg.initial_cash - 1000.0, cfg.initial_cash - 1000.0, cfg.initial_cash + 30.0]


def test_backtest_result_is_labelled_with_timestamps():
    bars = load_bars(SAMPLE_5M).slice(0, 300)
    r = run_backtest(bars, np.random.default_rng(0).integers(0, 5, 300))
    assert tuple(r.trades.columns) == TRADE_COLUMNS
    assert r.equity.index.equals(bars.index) and r.positions.index.equals(bars.index)
    assert (r.trades.entry_time == bars.index[r.trades.entry_bar]).all()
    assert (r.trades.exit_time == bars.index[r.trades.exit_bar]).all()
    assert set(r.trades.exit_reason.cat.categories) == {"signal", "stop", "take_profit", "square_off", "end_of_data"}


def test_bad_actions_are_user_errors():
    bars = make_bars([FLAT] * 4)
    with pytest.raises(UserInputError, match="one action per bar"):
        run_backtest(bars, [0, 1])
    with pytest.raises(UserInputError, match=r"actions\[2\] = 7"):
        run_backtest(bars, [0, 1, 7, 0])
    with pytest.raises(UserInputError, match="whole numbers"):
        run_backtest(bars, [0, 0.5, 0, 0])


def test_engine_config_yaml_section_and_unknown_key(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("engine:\n  product: index_futures\n  lot_size: 75\n  square_off: '15:00'\n")
    cfg = EngineConfig.from_yaml(path)
    assert (cfg.product, cfg.lot_size, cfg.square_off_minute) == ("index_futures", 75, 900)
    path.write_text("engine:\n  stop_atr_mul: 2\n")
    with pytest.raises(UserInputError, match="did you mean 'stop_atr_mult'"):
        EngineConfig.from_yaml(path)
    with pytest.raises(UserInputError, match="cannot be carried overnight"):
        from tradebot.core.config import parse_config
        parse_config(EngineConfig, {"carry_overnight": True})
    with pytest.raises(Exception, match="HH:MM"):
        EngineConfig(square_off="3pm")


def test_session_layout_matches_features_sessions():
    bars = load_bars(SAMPLE_5M)
    day, minute = session_layout(bars.index)
    np.testing.assert_array_equal(day, session_day(bars.index))
    np.testing.assert_array_equal(minute, minute_of_day(bars.index))


# ---- properties ------------------------------------------------------------------------------

def random_bars(seed: int, sessions: int) -> Bars:
    """Random-walk 5-minute bars over ``sessions`` days; some sessions are cut short; some bars gap."""
    rng = np.random.default_rng(seed)
    rows, stamps = [], []
    price = 1000.0
    for s in range(sessions):
        n = 75 if rng.random() < 0.7 else int(rng.integers(1, 75))
        t0 = pd.Timestamp("2024-01-01 09:15") + pd.Timedelta(days=s)
        for j in range(n):
            gap = rng.normal(0, 0.001) + (rng.random() < 0.05) * rng.normal(0, 0.01)
            o = price * math.exp(gap)
            c = o * math.exp(rng.normal(0, 0.002))
            rows.append((o, max(o, c) * math.exp(abs(rng.normal(0, 0.001))),
                         min(o, c) * math.exp(-abs(rng.normal(0, 0.001))), c))
            stamps.append(t0 + pd.Timedelta(minutes=5 * j))
            price = c
    return make_bars(rows, timestamps=stamps)


configs = st.builds(
    dict,
    product=st.sampled_from(["equity_intraday", "equity_delivery", "index_futures"]),
    risk_per_trade=st.floats(0.001, 0.2),
    stop_atr_mult=st.floats(0.5, 4.0),
    stop_loss=st.booleans(),
    take_profit_atr_mult=st.one_of(st.none(), st.floats(0.5, 6.0)),
    slippage_bps=st.floats(0.0, 20.0),
    slippage_atr=st.floats(0.0, 0.3),
    leverage=st.floats(0.5, 8.0),
    lot_size=st.sampled_from([1, 5, 75]),
    max_notional=st.one_of(st.none(), st.floats(1e4, 1e7)),
    fixed_qty=st.one_of(st.none(), st.integers(1, 2000)),
    square_off=st.sampled_from(["15:15", "14:00", None]),
    allow_short=st.booleans(),
    costs=st.booleans(),
    atr_period=st.sampled_from([3, 14]),
)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**31), sessions=st.integers(1, 4), cfg=configs, p_hold=st.floats(0.3, 0.9))
def test_engine_invariants_hold_for_random_bars_actions_and_configs(seed, sessions, cfg, p_hold):
    config = EngineConfig(**cfg)
    bars = random_bars(seed, sessions)
    n = len(bars)
    rng = np.random.default_rng(seed + 1)
    actions = np.where(rng.random(n) < p_hold, H, rng.integers(1, 5, n))
    r = run_backtest(bars, actions, config)
    f = bars.frame
    o, hi, lo, c = (f[k].to_numpy() for k in ("open", "high", "low", "close"))
    from tradebot.envs.market_data import compute_atr
    atr = compute_atr(bars, config.atr_period)
    eq, cash, pos = r.equity.to_numpy(), r.cash.to_numpy(), r.positions.to_numpy()
    scale = config.initial_cash

    # accounting identity at every bar, and P&L adds up (everything is closed at the end)
    np.testing.assert_allclose(eq, cash + pos * c, rtol=0, atol=1e-6 * scale)
    assert pos[-1] == 0
    assert r.trades.pnl.sum() == pytest.approx(eq[-1] - config.initial_cash, abs=1e-6 * scale)
    # costs never negative and all accounted for
    assert (r.trades.entry_costs >= 0).all() and (r.trades.exit_costs >= 0).all()
    assert r.costs_total == pytest.approx(r.trades.costs.sum(), abs=1e-6 * scale)

    bps, k = config.slippage_bps * 1e-4, config.slippage_atr
    lev = config.effective_leverage
    for t in r.trades.itertuples():
        e, x, side = t.entry_bar, t.exit_bar, (1 if t.side == "long" else -1)
        # the decision was taken at e-1 when flat; the fill is bar e's open plus slippage
        assert e >= 1 and x >= e
        assert actions[e - 1] == (BUY if side > 0 else SHORT) and pos[e - 1] == 0
        a_e = atr[e - 1] if np.isfinite(atr[e - 1]) and atr[e - 1] > 0 else 0.0
        assert t.entry_price == pytest.approx(max(o[e] + side * (o[e] * bps + k * a_e), 0.0), rel=1e-12)
        # sizing caps
        equity_before = eq[e - 1]
        assert t.qty % config.lot_size == 0 and t.qty > 0
        assert t.qty * t.entry_price <= lev * equity_before * (1 + 1e-9)
        if config.max_notional is not None:
            assert t.qty * t.entry_price <= config.max_notional * (1 + 1e-9)
        if config.fixed_qty is None:
            assert t.qty <= config.risk_per_trade * equity_before / (config.stop_atr_mult * atr[e - 1]) + 1e-6
        else:
            assert t.qty <= config.fixed_qty
        # the exit price (slippage removed) is one the exit bar traded
        a_x = atr[x - 1] if np.isfinite(atr[x - 1]) and atr[x - 1] > 0 else 0.0
        if t.exit_reason == "take_profit":
            raw = t.exit_price
            assert (raw >= t.take_profit_price - 1e-9) if side > 0 else (raw <= t.take_profit_price + 1e-9)
        else:  # a market order on the other side: undo the slippage
            raw = (t.exit_price + side * k * a_x) / (1 - side * bps)
        tol = 1e-9 * raw
        assert lo[x] - tol <= raw <= hi[x] + tol
        if t.exit_reason == "stop":
            if side > 0:
                assert raw <= min(t.stop_price, o[x]) + tol and lo[x] <= t.stop_price + tol
            else:
                assert raw >= max(t.stop_price, o[x]) - tol and hi[x] >= t.stop_price - tol
        if t.exit_reason == "signal":
            assert actions[x - 1] == (CLOSE_L if side > 0 else CLOSE_S) and raw == pytest.approx(o[x], rel=1e-12)

    # intraday: flat at every session end and from the square-off bar on
    if config.flat_at_session_end:
        day, minute = session_layout(bars.index)
        last = np.r_[day[1:] != day[:-1], True]
        assert (pos[last] == 0).all()
        if config.square_off_minute is not None:
            assert (pos[minute >= config.square_off_minute] == 0).all()
    if not config.shorts_allowed:
        assert (pos >= 0).all()
