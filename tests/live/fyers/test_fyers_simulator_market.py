"""The simulator's pieces without a server: ticks from bars, history, matching, the HSM codec, tokens."""

from __future__ import annotations

import pandas as pd
import pytest

from tradebot.features.bars import Bars
from tradebot.live.adapters.fyers.simulator import hsm
from tradebot.live.adapters.fyers.simulator.tokens import Auth, AuthError
from tradebot.live.adapters.fyers.simulator.market import Market
from tradebot.live.adapters.fyers.simulator.broker import Broker, OrderError

IST = "Asia/Kolkata"


def _bars(rows, symbol="NSE:TEST-EQ", freq="1min", start="2024-01-02 09:15"):
    idx = pd.date_range(start, periods=len(rows), freq=freq, tz=IST)
    frame = pd.DataFrame(rows, columns=["open", "high", "low", "close", "volume"], index=idx, dtype=float)
    return Bars.from_frame(frame.rename_axis("timestamp"), symbol=symbol)


def test_ticks_follow_open_near_extreme_far_extreme_close_and_split_volume():
    market = Market([_bars([[100, 104, 99, 103, 10], [103, 105, 98, 99, 7]])], start="first")
    ticks = [market.step() for _ in range(8)]
    assert [t.price for t in ticks] == [100, 99, 104, 103, 103, 105, 98, 99]
    assert [t.volume for t in ticks] == [2, 2, 2, 4, 1, 1, 1, 4]
    assert [t.ts - ticks[0].ts for t in ticks[:4]] == [0, 15, 30, 45]
    assert market.step() is None and market.finished


def test_daily_bars_tick_through_the_session_and_history_aggregates():
    market = Market([_bars([[10, 12, 9, 11, 400], [11, 13, 10, 12, 400]], freq="1D", start="2024-01-02")],
                    start="first")
    first = market.step()
    assert pd.Timestamp(first.ts, unit="s", tz=IST).strftime("%H:%M") == "09:15"
    for _ in range(3):
        market.step()
    candles = market.history("NSE:TEST-EQ", "D", 0, 2**31)
    assert candles == [[int(pd.Timestamp("2024-01-02", tz=IST).timestamp()), 10.0, 12.0, 9.0, 11.0, 400]]
    with pytest.raises(ValueError):
        market.history("NSE:TEST-EQ", "5", 0, 2**31)


def test_start_sets_the_past_and_history_hides_the_future():
    day1 = _bars([[100, 101, 99, 100, 0]] * 3, start="2024-01-02 15:27").frame
    day2 = _bars([[200, 201, 199, 200, 0]] * 2, start="2024-01-03 09:15").frame
    bars = Bars.from_frame(pd.concat([day1, day2]), symbol="NSE:TEST-EQ")
    market = Market([bars], start="last_session")
    assert market.quotes["NSE:TEST-EQ"].ltp == 100 and market.quotes["NSE:TEST-EQ"].prev_close == 100
    assert len(market.history("NSE:TEST-EQ", "1", 0, 2**31)) == 3
    market.step()
    q = market.quotes["NSE:TEST-EQ"]
    assert q.ltp == 200 and q.prev_close == 100 and q.open == 200


def test_broker_matching_and_average_cost_pnl():
    market = Market([_bars([[100, 104, 99, 103, 0], [103, 105, 98, 99, 0]])], start="first")
    broker = Broker(market, slippage_bps=10)
    buy, _ = broker.place({"symbol": "NSE:TEST-EQ", "qty": 10, "side": 1, "type": 2, "productType": "CNC"})
    sell, _ = broker.place({"symbol": "NSE:TEST-EQ", "qty": 4, "side": -1, "type": 1, "limitPrice": 104.0,
                            "productType": "CNC"})
    events = []
    broker.listeners.append(events.extend)
    for _ in range(4):
        broker.on_tick(market.step())
    assert buy.traded_price == 100.1 and sell.traded_price == 104.0  # 10 bps slippage; the limit
    pos = broker.positions["NSE:TEST-EQ-CNC"]
    assert pos.net_qty == 6 and pos.realized == pytest.approx((104 - 100.1) * 4)
    assert [kind for kind, _ in events] == ["orders", "trades", "positions"] * 2
    with pytest.raises(OrderError) as err:
        broker.place({"symbol": "NSE:TEST-EQ", "qty": 1, "side": 1, "type": 1, "limitPrice": 100.01,
                      "productType": "CNC"})
    assert err.value.code == -50


def test_ioc_limit_not_filled_at_its_first_tick_is_cancelled():
    market = Market([_bars([[100, 104, 99, 103, 0]])], start="first")
    broker = Broker(market)
    order, _ = broker.place({"symbol": "NSE:TEST-EQ", "qty": 1, "side": 1, "type": 1, "limitPrice": 99.0,
                             "validity": "IOC", "productType": "INTRADAY"})
    broker.on_tick(market.step())
    assert order.status == 1


def test_hsm_codec_round_trip():
    topics = ["sf|nse_cm|3045", "if|nse_cm|Nifty 50"]
    blob = len(topics).to_bytes(2, "big") + b"".join(bytes([len(t)]) + t.encode() for t in topics)
    frame = bytes([0, 99, hsm.SUBSCRIBE, 2, 1]) + len(blob).to_bytes(2, "big") + blob + bytes([2, 0, 1, 11])
    req = hsm.decode(frame)
    assert req.type == hsm.SUBSCRIBE and req.topics() == topics and req.channel() == 11
    assert hsm.decode(bytes([0, 1, 11])).type == hsm.PING
    reply = hsm.auth_reply(True)
    assert reply[2] == hsm.AUTH and reply[7:8] == b"K"


def test_tokens():
    auth = Auth(token_ttl_s=60)
    token = auth.mint("APP-100")
    assert auth.check(f"APP-100:{token}").app_id == "APP-100"
    assert auth.check(token, bare_ok=True)
    with pytest.raises(AuthError) as err:
        auth.check(f"OTHER-100:{token}")
    assert err.value.code == -352
    auth.revoke_all()
    with pytest.raises(AuthError) as err:
        auth.check(f"APP-100:{token}")
    assert err.value.code == -16


def test_paced_mode_moves_the_clock_on_its_own(fyers_sample_bars):
    import time

    from tradebot.live.adapters.fyers.simulator import FyersSimulator

    with FyersSimulator(data=[fyers_sample_bars], speed=600) as sim:  # a 15 s tick gap takes 25 ms
        start = sim.now()
        deadline = time.monotonic() + 10
        while sim.now() < start + 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sim.now() >= start + 60
