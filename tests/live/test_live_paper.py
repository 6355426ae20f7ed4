"""The paper broker as an execution client: refusals, idempotency, persistence, rate limits."""

from __future__ import annotations

import numpy as np
import pytest

from tradebot.envs.engine_config import EngineConfig
from tradebot.live.paper import PaperBroker
from tradebot.live.ports import Bar, Intent, OrderRequest, OrderStatus, SimClock, Side, client_order_id
from live_helpers import make_bars
from tradebot.core.errors import RejectedError, RetryableError, UserInputError

SYM = "NSE:TEST-EQ"


def _bars_list(n=6):
    o = [100.0 + k for k in range(n)]
    b = make_bars(SYM, "2024-01-01", o, [v + 0.5 for v in o], [v - 0.5 for v in o], [v + 0.2 for v in o])
    ns = b.index.as_unit("ns").asi8
    f = b.frame
    return [Bar(SYM, int(ns[i]), int(ns[i]) + 300 * 10**9, f["open"].iloc[i], f["high"].iloc[i], f["low"].iloc[i],
                f["close"].iloc[i], 0.0, "5m") for i in range(n)]


def _order(bar_ts, side=Side.BUY, qty=10.0, intent=Intent.ENTRY, reduce_only=False):
    return OrderRequest(client_order_id("s", SYM, bar_ts, intent), SYM, side, qty, intent, bar_ts, bar_ts,
                        reduce_only=reduce_only, stop_loss=2.0, take_profit=3.0)


def test_orders_fill_at_the_next_open_and_brackets_come_from_the_order():
    bars = _bars_list()
    broker = PaperBroker(EngineConfig(costs=False, slippage_bps=0.0, slippage_atr=0.0), [SYM])
    broker.connect()
    broker.on_bar(bars[0], 1.0)
    assert broker.submit(_order(bars[0].ts)).status is OrderStatus.ACCEPTED
    assert broker.position_reports() == []
    broker.on_bar(bars[1], 1.0)
    (pos,) = broker.position_reports()
    assert (pos.qty, pos.avg_price, pos.stop_price, pos.take_profit_price) == (10.0, bars[1].open, bars[1].open - 2.0,
                                                                             bars[1].open + 3.0)
    events = broker.poll_events()
    assert [type(e).__name__ for e in events] == ["Fill", "OrderUpdate"] and broker.poll_events() == []
    exit_ = _order(bars[1].ts, Side.SELL, 10.0, Intent.EXIT, reduce_only=True)
    broker.submit(exit_)
    broker.on_bar(bars[2], 1.0)
    assert broker.position_reports() == []
    fill = broker.fill_reports()[-1]
    assert fill.kind == "signal" and fill.price == bars[2].open and fill.realized_pnl == 10 * (bars[2].open - bars[1].open)
    assert broker.order_status(exit_.client_order_id).status is OrderStatus.FILLED


@pytest.mark.parametrize("order, match", [
    (lambda ts: _order(ts, qty=2.5), "whole number of lots"),
    (lambda ts: _order(ts, Side.SELL, reduce_only=True, intent=Intent.EXIT), "does not reduce"),
    (lambda ts: OrderRequest("X1", "NSE:NOPE-EQ", Side.BUY, 1.0, Intent.ENTRY, ts, ts), "unknown symbol"),
])
def test_refusals_are_recorded_and_raised(order, match):
    broker = PaperBroker(EngineConfig(), [SYM])
    broker.connect()
    o = order(1)
    with pytest.raises(RejectedError, match=match):
        broker.submit(o)
    assert broker.order_status(o.client_order_id).status is OrderStatus.REJECTED  # known: never re-sent blindly


def test_one_working_order_per_symbol_and_submit_is_idempotent():
    broker = PaperBroker(EngineConfig(), [SYM])
    broker.connect()
    o = _order(1)
    broker.submit(o)
    assert broker.submit(o).status is OrderStatus.ACCEPTED  # the same id: the same order
    with pytest.raises(RejectedError, match="already working"):
        broker.submit(_order(2))
    assert broker.submit_counts() == {o.client_order_id: 2, _order(2).client_order_id: 1}
    assert [u.status for u in broker.cancel_all()] == [OrderStatus.CANCELED]


def test_state_survives_a_reconnect_and_bars_are_processed_once(tmp_path):
    bars = _bars_list()
    path = tmp_path / "paper.db"
    a = PaperBroker(EngineConfig(), [SYM], path)
    a.connect()
    a.on_bar(bars[0], 1.0)
    a.submit(_order(bars[0].ts))
    a.on_bar(bars[1], 1.0)
    state = a.state_vector(SYM)
    a.disconnect()
    b = PaperBroker(EngineConfig(), [SYM], path)
    b.connect()
    np.testing.assert_array_equal(b.state_vector(SYM), state)
    assert repr(b.fill_reports()) == repr(a.fill_reports())  # (NaN fields: compare the text)
    assert repr(b.position_reports()) == repr(a.position_reports())
    b.on_bar(bars[1], 1.0)  # a replay of a processed bar: ignored
    np.testing.assert_array_equal(b.state_vector(SYM), state)
    assert b.last_bar_ts(SYM) == bars[1].ts
    b.disconnect()
    with pytest.raises(UserInputError, match="another engine config"):
        PaperBroker(EngineConfig(slippage_bps=3.0), [SYM], path).connect()


def test_the_brokers_rate_limit_answers_retryable():
    clock = SimClock(10**12)
    broker = PaperBroker(EngineConfig(), [f"NSE:S{i}-EQ" for i in range(12)], clock=clock, rate_limits=(10, 200))
    broker.connect()
    for i in range(10):
        broker.submit(OrderRequest(f"C{i}", f"NSE:S{i}-EQ", Side.BUY, 1.0, Intent.ENTRY, 1, 1))
    with pytest.raises(RetryableError, match="rate limit"):
        broker.submit(OrderRequest("C10", "NSE:S10-EQ", Side.BUY, 1.0, Intent.ENTRY, 1, 1))
    assert broker.order_status("C10") is None  # refused before it was taken: may be sent again
    clock.set(10**12 + 10**9)
    broker.submit(OrderRequest("C10", "NSE:S10-EQ", Side.BUY, 1.0, Intent.ENTRY, 1, 1))
