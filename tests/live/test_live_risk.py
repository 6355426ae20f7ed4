"""The risk engine: property tests of its guarantees (live/risk.py docstring) and its rules one by one.

The property tests drive the real loop (feed -> paper broker -> risk engine -> journal) with
hypothesis-drawn prices (including gaps through stops), ATRs, engine and risk settings and policy
actions, and check after every bar:

* |position| <= max_position; every entry's notional at its decision price <= max_notional; every entry
  carries a finite stop-loss and take-profit;
* E0 - E <= max_daily_loss x E0 + G (G: the one-bar gap risk of the session's most recent entry, the
  formula of the docstring), and E >= (1 - max_drawdown) x peak-at-entry - G;
* after the daily-loss limit is reached no entry fills in that session and the position is flat one
  bar later; after the kill switch, no entry fills ever again;
* no window of 1 s / 60 s holds more orders than the limits.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tradebot.envs.costs import (COST_BROKERAGE_RATE, COST_EXCHANGE, COST_GST, COST_IPFT, COST_SEBI, COST_STAMP_BUY,
                        COST_STT_BUY, COST_STT_SELL)
from tradebot.envs.engine import Action, EngineConfig
from tradebot.live.journal import Journal
from tradebot.core.nse_time import IST_OFFSET_NS, DAY_NS, MINUTE_NS
from tradebot.live.ports import NS_PER_SECOND, Bar, OrderStatus, PositionReport, RiskState, Side, Verdict
from tradebot.live.risk import RateLimiter, RiskConfig, RiskEngine
from live_helpers import LOOSE_RISK, make_bars, replay_loop
from tradebot.core.config import parse_config
from tradebot.core.errors import UserInputError

H, BUY, SHORT, CL, CS = (int(a) for a in Action)
SYM = "NSE:TEST-EQ"
PROPERTY = settings(max_examples=45, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                           HealthCheck.data_too_large])


# ------------------------------------------------------------------------------------ scenarios

@st.composite
def scenarios(draw):
    sessions = draw(st.integers(1, 2))
    per = draw(st.integers(6, 60))
    n = sessions * per
    price0 = draw(st.floats(50.0, 20_000.0))
    small = st.floats(-0.004, 0.004)
    gaps = draw(st.lists(st.one_of(small, small, small, st.floats(-0.08, 0.08)), min_size=n, max_size=n))
    moves = draw(st.lists(st.floats(-0.012, 0.012), min_size=n, max_size=n))
    wicks = draw(st.lists(st.tuples(st.floats(0.0, 0.01), st.floats(0.0, 0.01)), min_size=n, max_size=n))
    atr_frac = draw(st.lists(st.floats(0.0005, 0.02), min_size=n, max_size=n))
    actions = draw(st.lists(st.sampled_from([H, BUY, SHORT, CL, CS, BUY, SHORT]), min_size=n, max_size=n))
    engine = EngineConfig(
        product=draw(st.sampled_from(["equity_intraday", "index_futures"])),
        initial_cash=draw(st.floats(1e5, 5e6)),
        risk_per_trade=draw(st.floats(0.002, 0.3)),
        stop_atr_mult=draw(st.floats(0.5, 4.0)),
        take_profit_atr_mult=draw(st.floats(0.5, 6.0)),
        slippage_bps=draw(st.floats(0.0, 10.0)),
        slippage_atr=draw(st.floats(0.0, 0.2)),
        leverage=draw(st.floats(1.0, 10.0)),
        lot_size=draw(st.sampled_from([1, 1, 25])),
    )
    risk = RiskConfig(
        max_daily_loss=draw(st.floats(0.001, 0.05)),
        max_drawdown=draw(st.floats(0.003, 0.3)),
        max_position=draw(st.integers(1, 200_000)),
        max_notional=draw(st.floats(1e4, 1e8)),
        square_off=draw(st.sampled_from([None, "15:15"])),
    )
    o, h, lo, c = [], [], [], []
    prev = price0
    for g, m, (w1, w2) in zip(gaps, moves, wicks):
        op = prev * math.exp(g)
        cl = op * math.exp(m)
        o.append(op)
        c.append(cl)
        h.append(max(op, cl) * (1 + w1))
        lo.append(min(op, cl) * (1 - w2))
        prev = cl
    bars = make_bars(SYM, "2024-01-01", o, h, lo, c, sessions=sessions)
    atr = np.array(atr_frac) * np.array(c)
    return bars, np.array(actions), atr, engine, risk


def _run(bars, actions, atr, engine, risk):
    snaps = []
    loop = None

    def hook(stage, symbol, ts):
        if stage == "bar_done":
            p = {r.symbol: r for r in loop.broker.position_reports()}.get(symbol)
            snaps.append((ts, loop.broker.account_report().equity, p.qty if p else 0.0, loop.risk.state,
                          loop.risk.peak_equity))

    loop = replay_loop(bars, actions, atr, engine=engine, risk=risk, on_stage=hook)
    loop.run()
    return loop, pd.DataFrame(snaps, columns=["ts", "equity", "qty", "state", "peak"])


def _cost_rate(engine: EngineConfig) -> float:
    """c of the docstring: the proportional charges per rupee traded, the larger side."""
    v = engine.cost_vector()
    rate = v[COST_BROKERAGE_RATE] if math.isfinite(v[COST_BROKERAGE_RATE]) else 0.0
    return (rate + v[COST_EXCHANGE] + v[COST_IPFT] + v[COST_SEBI]) * (1 + v[COST_GST]) + max(
        v[COST_STT_BUY] + v[COST_STAMP_BUY], v[COST_STT_SELL])


def _gap_risk(entry, exit_fill, order, bars, atr, engine, upto_ts):
    """G of the docstring for one trade, as of the close of bar ``upto_ts``."""
    f = bars.frame
    ns = bars.index.as_unit("ns").asi8
    b = engine.slippage_bps * 1e-4
    s = engine.slippage_atr
    c = _cost_rate(engine)
    side = 1 if entry.side is Side.BUY else -1
    i_e = int(np.searchsorted(ns, entry.ts))
    g = (b + 2 * c) * (1 + b) * abs(f["open"].iloc[i_e] - order["reference_price"])
    if exit_fill is not None and exit_fill.ts <= upto_ts:
        i_x = int(np.searchsorted(ns, exit_fill.ts))
        if exit_fill.kind == "stop":
            g += (1 + b) * (1 + c) * max(0.0, side * (entry.stop_price - f["open"].iloc[i_x]))
        g += (1 + c) * s * max(0.0, atr[i_x - 1] - order["atr"])
    return entry.qty * g


@PROPERTY
@given(scenarios())
def test_risk_engine_bounds_position_daily_loss_and_drawdown_for_any_actions_and_prices(case):
    bars, actions, atr, engine, risk = case
    loop, snaps = _run(bars, actions, atr, engine, risk)
    j = loop.journal
    fills = j.fills()
    orders = {o["client_order_id"]: o for o in j.orders()}
    requests = {c: j.order_request(c) for c in orders}
    entries = [f for f in fills if f.kind == "entry"]
    exits = {f.position_id: f for f in fills if f.kind != "entry"}

    # 1. position and notional limits; a stop and a take-profit on every entry
    assert (snaps["qty"].abs() <= risk.max_position).all()
    for c, req in requests.items():
        if req.intent.value == "entry":
            assert req.qty <= risk.max_position
            assert req.qty * req.reference_price <= risk.max_notional * (1 + 1e-12)
            assert req.stop_loss > 0 and req.take_profit > 0
    for e in entries:
        assert math.isfinite(e.stop_price) and math.isfinite(e.take_profit_price)

    # 2. daily loss and drawdown, at every bar close
    day = (snaps["ts"].to_numpy() + IST_OFFSET_NS) // DAY_NS
    e0 = engine.initial_cash
    tol = 1e-6 * engine.initial_cash
    halted_at = None
    killed_at = None
    peak = engine.initial_cash
    peak_at_entry = {}
    for k, row in snaps.iterrows():
        if k > 0 and day[k] != day[k - 1]:
            e0 = snaps["equity"].iloc[k - 1]
            halted_at = None
        ts = int(row["ts"])
        recent = [e for e in entries if e.ts <= ts and (e.ts + IST_OFFSET_NS) // DAY_NS == day[k]]
        g = 0.0
        if recent:
            last = recent[-1]
            g = _gap_risk(last, exits.get(last.position_id), {"reference_price": requests[last.client_order_id].reference_price,
                                                              "atr": requests[last.client_order_id].atr},
                          bars, atr, engine, ts)
        loss = e0 - row["equity"]
        assert loss <= risk.max_daily_loss * e0 + g + tol, (k, loss, risk.max_daily_loss * e0, g)
        for e in entries:  # drawdown sizing, for the trade open at this bar
            if e.ts <= ts and (e.position_id not in exits or exits[e.position_id].ts >= ts):
                floor = (1 - risk.max_drawdown) * peak_at_entry[e.position_id]
                ge = _gap_risk(e, exits.get(e.position_id), {"reference_price": requests[e.client_order_id].reference_price,
                                                             "atr": requests[e.client_order_id].atr},
                               bars, atr, engine, ts)
                assert row["equity"] >= floor - ge - tol
        # 3. reactions: halt for the session / kill switch
        if halted_at is not None and ts > halted_at:
            assert not any(e.ts == ts for e in entries), "entry after the daily-loss halt"
            if k >= 1 and int(snaps["ts"].iloc[k - 1]) >= halted_at and day[k - 1] == day[k]:
                assert row["qty"] == 0.0, "not flat one bar after the daily-loss halt"
        if killed_at is not None and ts > killed_at:
            assert not any(e.ts == ts for e in entries), "entry after the kill switch"
            if int(snaps["ts"].iloc[k - 1]) >= killed_at:
                assert row["qty"] == 0.0, "not flat one bar after the kill switch"
        if halted_at is None and loss >= risk.max_daily_loss * e0:
            halted_at = ts
            assert row["state"] == RiskState.HALTED
        peak = max(peak, row["equity"])
        if killed_at is None and row["equity"] <= (1 - risk.max_drawdown) * peak:
            killed_at = ts
            assert row["state"] == RiskState.HALTED
        for e in entries:  # the peak the entry decided at (its fill is at the next bar)
            if e.position_id not in peak_at_entry and k + 1 < len(snaps) and int(snaps["ts"].iloc[k + 1]) == e.ts:
                peak_at_entry[e.position_id] = peak
    if killed_at is not None:
        assert any(ev["kind"] == "kill_switch" for ev in j.risk_events())


@settings(max_examples=60, deadline=None)
@given(events=st.lists(st.tuples(st.integers(0, 2500), st.integers(0, 5), st.sampled_from([BUY, SHORT, CL, CS])),
                       min_size=1, max_size=300),
       per_s=st.integers(1, 10), per_min=st.integers(1, 60))
def test_no_window_holds_more_orders_than_the_rate_limits(events, per_s, per_min):
    per_min = max(per_min, per_s)
    risk = RiskEngine(LOOSE_RISK.model_copy(update={"orders_per_second": per_s, "orders_per_minute": per_min}),
                      EngineConfig(), "5m")
    risk.start(1e6)
    now = pd.Timestamp("2024-01-02 10:00", tz="Asia/Kolkata").value
    positions: dict[str, PositionReport] = {}
    sent: list[int] = []
    for dt_ms, k, action in events:
        now += dt_ms * 1_000_000
        sym = f"NSE:S{k}-EQ"
        bar = Bar(sym, now - 5 * MINUTE_NS, now, 100.0, 101.0, 99.0, 100.0, 0.0, "5m")
        d, _ = risk.evaluate(sym, bar, action, position=positions.get(sym), working=None, equity=1e6, atr=0.5,
                             now=now, run="s", positions=positions)
        if d.order is not None:
            risk.limiter.record(now)
            sent.append(now)
            if d.order.intent.value == "entry":
                positions[sym] = PositionReport(sym, d.order.qty * d.order.side.sign, 100.0, 99.0, 101.0)
            else:
                positions.pop(sym, None)
        elif d.code == "rate_limit":
            window = [t for t in sent if t > now - NS_PER_SECOND]
            minute = [t for t in sent if t > now - 60 * NS_PER_SECOND]
            assert len(window) >= per_s or len(minute) >= per_min  # refused only when a limit is reached
    times = np.array(sent)
    for t in times:
        assert ((times > t - NS_PER_SECOND) & (times <= t)).sum() <= per_s
        assert ((times > t - 60 * NS_PER_SECOND) & (times <= t)).sum() <= per_min


def test_many_symbols_at_one_bar_stay_within_the_order_rate_and_the_broker_never_refuses():
    n_sym = 12
    base = make_bars("NSE:A-EQ", "2024-01-01", [100.0] * 20, [101.0] * 20, [99.0] * 20, [100.0] * 20)
    series = {}
    for i in range(n_sym):
        f = base.frame.copy()
        series[f"NSE:S{i}-EQ"] = type(base).from_frame(f, symbol=f"NSE:S{i}-EQ", timeframe="5m")
    acts = np.array([BUY, CL] * 10)
    loop = replay_loop(series, {s: acts for s in series}, {s: np.full(20, 0.5) for s in series},
                       risk=LOOSE_RISK.model_copy(update={"orders_per_second": 8}))
    loop.run()
    j = loop.journal
    per_bar = pd.Series([o["created_ns"] for o in j.orders()]).value_counts()
    assert per_bar.max() == 8  # 12 symbols want an order at the same instant: 8 go, 4 are vetoed
    vetoes = [e for e in j.risk_events() if e["kind"] == "veto" and "rate limit" in e["reason"]]
    assert len(vetoes) >= 4
    assert not [o for o in j.orders() if "rate limit" in (o["reason"] or "")]  # the broker (10/s) never refused
    assert loop.metrics.value("tradebot_live_rejections_total", {"source": "risk", "reason": "rate_limit"}) >= 4


# ------------------------------------------------------------------------------- rules one by one

def _bar(minute_end: int, close: float = 100.0, day: str = "2024-01-02", low: float | None = None,
         high: float | None = None) -> Bar:
    end = pd.Timestamp(day, tz="Asia/Kolkata").value + minute_end * MINUTE_NS
    lo = close - 1 if low is None else low
    hi = close + 1 if high is None else high
    return Bar(SYM, end - 5 * MINUTE_NS, end, close, hi, lo, close, 0.0, "5m")


def _engine(**risk) -> RiskEngine:
    r = RiskEngine(RiskConfig(**risk), EngineConfig(), "5m")
    r.start(1_000_000.0)
    return r


def _evaluate(r: RiskEngine, bar: Bar, action: int, position=None, now=None, working=None, atr=1.0, equity=1e6):
    return r.evaluate(SYM, bar, action, position=position, working=working, equity=equity, atr=atr,
                      now=bar.end if now is None else now, run="t")


def test_risk_engine_refuses_an_engine_with_stops_but_no_take_profit():
    with pytest.raises(UserInputError, match="take_profit_atr_mult"):
        RiskEngine(RiskConfig(), EngineConfig(take_profit_atr_mult=None), "5m")


NO_STOPS = EngineConfig(stop_loss=False, take_profit_atr_mult=None)  # as the positional designs run


def test_without_engine_stops_an_entry_has_no_bracket_and_is_sized_to_lose_at_most_the_budget():
    r = RiskEngine(RiskConfig(max_daily_loss=0.01, unprotected_loss=0.1), NO_STOPS, "5m")
    r.start(1_000_000.0)
    d, _ = _evaluate(r, _bar(10 * 60), BUY, atr=2.0)
    o = d.order
    assert o.stop_loss is None and o.take_profit is None
    assert d.verdict is Verdict.RESIZE and d.code == "loss_budget"  # 10,000 budget / a 10 % move: ~1,000 units
    assert r.worst_loss(1, o.qty, 100.0, 2.0) <= 10_000.0 < r.worst_loss(1, o.qty + 1, 100.0, 2.0)
    assert 950 <= o.qty < 1000
    fill = 100.0 * (1 + EngineConfig().slippage_bps / 1e4) + EngineConfig().slippage_atr * 2.0
    assert r.worst_loss(1, 100, 100.0, 2.0) > 100 * fill * 0.1  # the 10 % move, plus exit slippage and costs


def test_without_engine_stops_a_position_without_stop_stays_and_risks_unprotected_loss_of_its_value():
    held = PositionReport(SYM, 50.0, 100.0, math.nan, math.nan)
    bar = _bar(10 * 60, close=120.0)
    r = RiskEngine(RiskConfig(unprotected_loss=0.2), NO_STOPS, "5m")
    r.start(1_000_000.0)
    r.marks[SYM] = (120.0, 2.0)
    assert r.flatten_reason(SYM, held, bar, bar.end) is None
    assert 50 * 120.0 * 0.2 < r.open_risk(held) < 50 * 120.0 * 0.2 + 10.0  # plus the exit's costs
    assert _engine().flatten_reason(SYM, held, bar, bar.end) == "position has no stop-loss"


@pytest.mark.parametrize("data, match", [
    ({"max_daily_los": 0.1}, "did you mean 'max_daily_loss'"),
    ({"entry_end": "16:00"}, "entry_end"),
    ({"entry_start": "14:00", "entry_end": "10:00"}, "before entry_end"),
    ({"max_drawdown": 1.5}, "max_drawdown"),
    ({"orders_per_second": 20, "orders_per_minute": 10}, "orders_per_minute"),
])
def test_risk_config_errors_name_the_key(data, match):
    with pytest.raises(UserInputError, match=match):
        parse_config(RiskConfig, data, "live.yaml [risk]")


def test_entry_is_sized_by_the_engine_and_carries_atr_stop_and_take_profit():
    r = _engine()
    d, events = _evaluate(r, _bar(10 * 60), BUY, atr=2.0)
    assert d.verdict is Verdict.ACCEPT and not events
    o = d.order
    assert o.qty == math.floor(0.01 * 1e6 / (2.0 * 2.0))  # risk 1 % at a 2-ATR stop
    assert o.stop_loss == 4.0 and o.take_profit == 6.0 and o.side is Side.BUY and not o.reduce_only


@pytest.mark.parametrize("limits, code", [({"max_position": 100}, "max_position"),
                                          ({"max_notional": 20_000.0}, "max_notional")])
def test_entry_is_resized_by_position_and_notional_limits(limits, code):
    d, events = _evaluate(_engine(**limits), _bar(10 * 60), BUY)
    assert d.verdict is Verdict.RESIZE and d.code == code
    assert d.order.qty == (100 if code == "max_position" else 200)
    assert events[0].kind == "resize" and code in events[0].reason


def test_entry_is_cut_to_the_daily_loss_budget():
    r = _engine(max_daily_loss=0.001)  # 1,000 rupees for the day
    d, _ = _evaluate(r, _bar(10 * 60), BUY, atr=2.0)
    assert d.verdict is Verdict.RESIZE and d.code == "loss_budget"
    assert r.worst_loss(1, d.order.qty, 100.0, 2.0) <= 1000.0 < r.worst_loss(1, d.order.qty + 1, 100.0, 2.0)


@pytest.mark.parametrize("bar, kwargs, code", [
    (_bar(9 * 60 + 15 + 5), {}, None),  # the 09:15 bar's decision fills at 09:20: inside the window
    (_bar(15 * 60 + 15), {}, "window"),  # fills at 15:15: entry_end
    (_bar(10 * 60), {"now_offset_s": 31}, "stale"),
    (_bar(10 * 60), {"atr": float("nan")}, "no_atr"),
    (_bar(10 * 60), {"position": PositionReport(SYM, 10.0, 100.0, 98.0, 103.0)}, "position_open"),
])
def test_entry_vetoes(bar, kwargs, code):
    r = _engine()
    now = bar.end + int(kwargs.pop("now_offset_s", 0) * NS_PER_SECOND)
    d, events = _evaluate(r, bar, SHORT, now=now, **kwargs)
    if code is None:
        assert d.verdict is Verdict.ACCEPT
    else:
        assert d.verdict is Verdict.VETO and d.code == code and d.order is None
        assert events and events[0].kind == "veto" and events[0].reason


def test_shorts_are_vetoed_for_delivery():
    r = RiskEngine(RiskConfig(), EngineConfig(product="equity_delivery"), "5m")
    r.start(1e6)
    d, _ = _evaluate(r, _bar(10 * 60), SHORT)
    assert d.code == "no_shorts"


def test_exits_need_that_position_and_are_whole():
    r = _engine()
    pos = PositionReport(SYM, -40.0, 100.0, 102.0, 97.0)
    assert _evaluate(r, _bar(10 * 60), CL, position=pos)[0].code == "no_position"
    d, _ = _evaluate(r, _bar(10 * 60), CS, position=pos)
    assert d.verdict is Verdict.ACCEPT and d.order.reduce_only and d.order.qty == 40 and d.order.side is Side.BUY


@pytest.mark.parametrize("pos, bar, why", [
    (PositionReport(SYM, 10.0, 100.0, float("nan"), 103.0), _bar(10 * 60), "no stop-loss"),
    (PositionReport(SYM, 10.0, 100.0, 98.0, 103.0), _bar(10 * 60, low=97.5), "not enforced"),
    (PositionReport(SYM, -10.0, 100.0, 101.0, 97.0), _bar(10 * 60, high=101.0), "not enforced"),
    (PositionReport(SYM, 10.0, 100.0, 98.0, 103.0), _bar(15 * 60 + 15), "square-off"),
])
def test_positions_are_flattened_when_unprotected_or_at_square_off(pos, bar, why):
    d, events = _evaluate(_engine(), bar, H, position=pos)
    assert d.verdict is Verdict.OVERRIDE and why in d.reasons[0]
    assert d.order.intent.value == "flatten" and d.order.reduce_only and d.order.qty == 10
    assert events[0].kind == "override"


def test_daily_loss_halts_for_the_session_only():
    r = _engine(max_daily_loss=0.02)
    events = r.on_bar_close(SYM, _bar(10 * 60), 979_000.0, 1.0, _bar(10 * 60).end)
    assert r.state is RiskState.HALTED and events[0].kind == "daily_loss"
    assert _evaluate(r, _bar(10 * 60 + 5), BUY)[0].code == "state"
    pos = PositionReport(SYM, 10.0, 100.0, 98.0, 103.0)
    assert _evaluate(r, _bar(10 * 60 + 5), H, position=pos)[0].verdict is Verdict.OVERRIDE
    r.on_bar_close(SYM, _bar(9 * 60 + 20, day="2024-01-03"), 979_000.0, 1.0, _bar(9 * 60 + 20, day="2024-01-03").end)
    assert r.state is RiskState.ACTIVE and r.day_start_equity == 979_000.0


def test_kill_switch_is_sticky_until_resume_and_survives_a_restart():
    r = _engine(max_drawdown=0.05)
    r.on_bar_close(SYM, _bar(10 * 60), 1_100_000.0, 1.0, 0)
    r.on_bar_close(SYM, _bar(10 * 60 + 5), 1_044_000.0, 1.0, 0)  # 5.1 % below the peak
    assert r.state is RiskState.HALTED and "kill_switch" in r.conditions
    restored = _engine(max_drawdown=0.05)
    restored.load_state_dict(r.state_dict())
    restored.on_bar_close(SYM, _bar(9 * 60 + 20, day="2024-01-03"), 1_044_000.0, 1.0, 0)
    assert restored.state is RiskState.HALTED  # a new session does not clear it
    events = restored.apply_control("resume", "checked", 0)
    assert restored.state is RiskState.ACTIVE and events[-1].details["to"] == "ACTIVE"


def test_manual_reduce_allows_exits_only():
    r = _engine()
    r.apply_control("reduce", "", 0)
    assert r.state is RiskState.REDUCING
    assert _evaluate(r, _bar(10 * 60), BUY)[0].code == "state"
    pos = PositionReport(SYM, 10.0, 100.0, 98.0, 103.0)
    assert _evaluate(r, _bar(10 * 60), CL, position=pos)[0].verdict is Verdict.ACCEPT


def test_stale_data_reduces_then_flattens_between_bars():
    r = _engine(stale_entry_s=30, stale_flatten_s=120)
    bar = _bar(10 * 60)
    r.on_bar_close(SYM, bar, 1e6, 1.0, bar.end)
    due = bar.end + 5 * MINUTE_NS
    assert r.on_heartbeat(due + 20 * NS_PER_SECOND) == [] and r.state is RiskState.ACTIVE
    r.on_heartbeat(due + 31 * NS_PER_SECOND)
    assert r.state is RiskState.REDUCING
    pos = PositionReport(SYM, 10.0, 100.0, 98.0, 103.0)
    assert r.flatten_reason(SYM, pos, None, due + 60 * NS_PER_SECOND) is None
    r.on_heartbeat(due + 121 * NS_PER_SECOND)
    assert "flatten" in r.flatten_reason(SYM, pos, None, due + 121 * NS_PER_SECOND)
    late = _bar(10 * 60 + 10)
    r.on_bar_close(SYM, late, 1e6, 1.0, late.end)  # data again
    assert r.state is RiskState.ACTIVE
    # after the close nothing is overdue (and no bar yet on a new day cannot be told from a holiday)
    last = _bar(15 * 60 + 30)
    r.on_bar_close(SYM, last, 1e6, 1.0, last.end)
    assert r.overdue_s(SYM, last.end + 3600 * NS_PER_SECOND) is None


def test_rate_limiter_is_exact():
    lim = RateLimiter(3, 5)
    t0 = 10 * NS_PER_SECOND
    for k in range(3):
        assert lim.allow(t0 + k)
        lim.record(t0 + k)
    assert not lim.allow(t0 + NS_PER_SECOND - 1)
    assert lim.allow(t0 + NS_PER_SECOND)  # the first one has left the 1 s window
    lim.record(t0 + NS_PER_SECOND)
    lim.record(t0 + 2 * NS_PER_SECOND)
    assert not lim.allow(t0 + 3 * NS_PER_SECOND)  # 5 in the last minute
    assert lim.allow(t0 + 60 * NS_PER_SECOND)


# -------------------------------------------------------------------------- through the loop

def _trend_bars(n=40, drop_at=None, drop=0.0):
    o, h, lo, c = [], [], [], []
    p = 1000.0
    for k in range(n):
        op = p * (1 - drop) if k == drop_at else p
        cl = op + 1.0
        o.append(op)
        c.append(cl)
        h.append(cl + 0.5)
        lo.append(op - 0.5)
        p = cl
    return make_bars(SYM, "2024-01-01", o, h, lo, c)


def test_daily_loss_breach_flattens_at_the_next_open_and_blocks_entries_for_the_session():
    bars = _trend_bars(30, drop_at=10, drop=0.03)  # a 3 % gap down through the stop at bar 10
    actions = np.full(30, BUY)
    loop = replay_loop(bars, actions, np.full(30, 5.0),
                       engine=EngineConfig(risk_per_trade=0.05, stop_atr_mult=4.0, take_profit_atr_mult=50.0),
                       risk=RiskConfig(max_daily_loss=0.005, max_drawdown=0.5))
    loop.run()
    j = loop.journal
    kinds = [e["kind"] for e in j.risk_events()]
    assert "daily_loss" in kinds
    entries = [f for f in j.fills() if f.kind == "entry"]
    breach = next(e for e in j.risk_events() if e["kind"] == "daily_loss")
    assert all(f.ts < breach["ts"] for f in entries)
    assert j.status()["risk_state"] == "HALTED"


def test_manual_halt_from_the_journal_flattens_and_stops_entries(tmp_path):
    from tradebot.live.journal import request_control

    bars = _trend_bars(30)
    path = tmp_path / "j.db"
    loop = None

    def hook(stage, symbol, ts):
        if stage == "bar_done" and ts == int(bars.index[12].value):
            request_control(path, "halt", "operator says stop")  # another process would do the same

    loop = replay_loop(bars, np.full(30, BUY), np.full(30, 5.0), journal=Journal(path),
                       risk=RiskConfig(max_daily_loss=0.5, max_drawdown=0.5), on_stage=hook)
    loop.run()
    j = loop.journal
    entries = [f for f in j.fills() if f.kind == "entry"]
    flat = [f for f in j.fills() if f.kind == "signal"]
    assert entries and all(f.ts <= int(bars.index[13].value) for f in entries)
    assert flat and flat[-1].ts == int(bars.index[14].value)  # decided at bar 13, filled at 14's open
    assert any(e["kind"] == "control" and "operator says stop" in e["reason"] for e in j.risk_events())
    assert j.status()["risk_state"] == "HALTED" and j.status()["pending_commands"] == []
    assert any(o["intent"] == "flatten" and o["status"] == OrderStatus.FILLED.value for o in j.orders())
