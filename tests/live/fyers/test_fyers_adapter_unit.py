"""The client and the data side on recorded payloads and fake sockets (no network): order mapping, status
mapping, socket-maintained state, fills and P&L, history chunking and candle handling, the feed's
tick conversion and its watchdog (reconnect + backfill, ticks held back meanwhile)."""

from __future__ import annotations

import math
import time
from datetime import date

import pandas as pd
import pytest

from tradebot.live.adapters.fyers import fakes
from tradebot.live.adapters.fyers.client import FyersExecutionClient, FyersOrder, fyers_status, parse_time_ns, tag_of
from tradebot.live.adapters.fyers.data import FyersDataFeed, candles_to_frame, chunks, fetch_history, resolution
from tradebot.live.adapters.fyers.error_translation import FyersRejected
from tradebot.live.adapters.fyers.ratelimit import RateLimiter
from tradebot.live.adapters.fyers.rest import Endpoints, FyersRest
from tradebot.live.ports import Bar, Fill, Intent, OrderRequest, OrderStatus, OrderUpdate, Side, Tick
from tradebot.core.errors import UserInputError

COID = "TB0123456789ABCDEF01"


def _client(model=None, socket=True):
    model = model or fakes.FakeFyersModel()
    rest = FyersRest(model, limiter=RateLimiter(), sleep=lambda s: None, http_info=model.http)
    holder = {}

    def factory(**cb):
        holder["s"] = fakes.FakeOrderSocket(**cb)
        return holder["s"]

    c = FyersExecutionClient(rest, access_token="A-100:tok" if socket else None, socket_factory=factory,
                             sleep=lambda s: None, timeframe="5m")
    c.connect()
    return c, model, holder.get("s")


def _order(**kw) -> OrderRequest:
    base = dict(client_order_id=COID, symbol="NSE:SBIN-EQ", side=Side.BUY, qty=10, intent=Intent.ENTRY, bar_ts=0,
                created_ns=0, stop_loss=5.0, take_profit=10.0)
    base.update(kw)
    return OrderRequest(**base)


def test_order_payload_maps_product_side_type_tag_and_bracket() -> None:
    c, model, _ = _client()
    c.submit(_order())
    body = [p for n, p in model.calls if n == "place_order"][0]
    assert body == {"symbol": "NSE:SBIN-EQ", "qty": 10, "type": 2, "side": 1, "productType": "INTRADAY",
                    "limitPrice": 0, "stopPrice": 0, "validity": "DAY", "disclosedQty": 0, "offlineOrder": False,
                    "orderTag": COID, "stopLoss": 5.0, "takeProfit": 10.0, "legType": 1}
    c2, m2, _ = _client()
    c2.submit(FyersOrder(client_order_id="TB1", symbol="NSE:SBIN-EQ", side=Side.SELL, qty=5, intent=Intent.EXIT,
                         bar_ts=0, created_ns=0, order_type="STOP_LIMIT", product="equity_delivery", reduce_only=True,
                         limit_price=600.02, stop_price=601.0))
    body = [p for n, p in m2.calls if n == "place_order"][0]
    assert (body["type"], body["side"], body["productType"], body["limitPrice"], body["stopPrice"]) == \
        (4, -1, "CNC", 600.0, 601.0) and "stopLoss" not in body
    for bad in (_order(qty=2.5), _order(client_order_id="TB-1"), _order(product="crypto"),
                FyersOrder(client_order_id="TB2", symbol="NSE:SBIN-EQ", side=Side.BUY, qty=1, intent=Intent.ENTRY,
                           bar_ts=0, created_ns=0, order_type="LIMIT")):
        with pytest.raises(FyersRejected):
            _client()[0].submit(bad)


def test_status_codes_and_tags() -> None:
    assert [fyers_status(i) for i in (1, 2, 4, 5, 6, 7)] == [OrderStatus.CANCELED, OrderStatus.FILLED,
                                                             OrderStatus.ACCEPTED, OrderStatus.REJECTED,
                                                             OrderStatus.ACCEPTED, OrderStatus.EXPIRED]
    assert tag_of("1:TBX") == "TBX" and tag_of("2:Untagged") == "" and tag_of("TBX") == "TBX"
    assert parse_time_ns("04-Aug-2023 09:20:05", 0) == pd.Timestamp("2023-08-04 09:20:05+05:30").value
    assert parse_time_ns(1691121005, 0) == 1691121005 * 10**9


def test_socket_updates_become_events_fills_positions_and_no_rest_per_bar() -> None:
    c, model, sock = _client()
    c.submit(_order())
    sock.push_order(fakes.order_item(COID, status=2, filled=10, price=600.0))
    sock.push_trade(fakes.trade_item(COID, price=600.0))
    sock.push_position({"symbol": "NSE:SBIN-EQ", "id": "NSE:SBIN-EQ-INTRADAY", "netQty": 10, "netAvg": 600.0,
                        "realized_profit": 0.0, "unrealized_profit": 0.0})
    events = c.poll_events()
    assert [type(e) for e in events] == [OrderUpdate, Fill] and events[0].status is OrderStatus.FILLED
    f = events[1]
    assert (f.kind, f.position_id, f.stop_price, f.take_profit_price) == ("entry", COID, 595.0, 610.0)
    assert f.ts == pd.Timestamp("2023-08-04 09:20:00+05:30").value  # labelled by its 5m bar
    model.calls.clear()
    for _ in range(5):  # what the loop asks at every bar
        [p] = c.position_reports()
        c.mark("NSE:SBIN-EQ", 610.0)
        acct = c.account_report()
    assert model.calls == []  # answered from socket-kept state
    assert (p.qty, p.avg_price, p.position_id) == (10.0, 600.0, COID)
    assert acct.equity == 100000.0 + 100.0 and acct.cash == 95000.0
    # a stop leg filled at Fyers (not our order): an exit fill of kind "stop" with the P&L
    sock.push_trade(fakes.trade_item("", trade_no="T2", order_id="999", side=-1, price=595.0) | {"orderTag": "2:Untagged"})
    sock.push_position({"symbol": "NSE:SBIN-EQ", "id": "NSE:SBIN-EQ-INTRADAY", "netQty": 0, "netAvg": 0,
                        "realized_profit": -50.0, "unrealized_profit": 0.0})
    [x] = c.poll_events()
    assert (x.kind, x.position_id, x.realized_pnl) == ("stop", COID, -50.0)
    assert c.position_reports() == []


def test_status_never_steps_back_and_duplicates_are_ignored() -> None:
    c, _, sock = _client()
    c.submit(_order())
    sock.push_order(fakes.order_item(COID, status=2, filled=10, price=600.0))
    sock.push_order(fakes.order_item(COID, status=6))  # a late "pending"
    sock.push_trade(fakes.trade_item(COID))
    sock.push_trade(fakes.trade_item(COID))  # the same trade again
    assert c.order_status(COID).status is OrderStatus.FILLED
    assert sum(isinstance(e, Fill) for e in c.poll_events()) == 1


def test_without_the_socket_poll_events_polls_rest() -> None:
    model = fakes.FakeFyersModel()
    c, _, _ = _client(model, socket=False)
    c.poll_interval_s = 0.0
    c.submit(_order())
    model.script("orderbook", {"s": "ok", "orderBook": [fakes.order_item(COID, status=2, filled=10, price=600.0)]})
    model.script("tradebook", {"s": "ok", "tradeBook": [fakes.trade_item(COID)]})
    ev = c.poll_events()
    assert any(isinstance(e, Fill) for e in ev) and any(getattr(e, "status", None) is OrderStatus.FILLED for e in ev)


def test_reconcile_reports_rebuild_from_rest_at_connect() -> None:
    model = fakes.FakeFyersModel()
    model.script("orderbook", {"s": "ok", "orderBook": [fakes.order_item(COID, status=2, filled=10, price=600.0)]})
    model.script("tradebook", {"s": "ok", "tradeBook": [fakes.trade_item(COID)]})
    c, _, _ = _client(model)
    assert [u.client_order_id for u in c.order_status_reports()] == [COID]
    assert [f.client_order_id for f in c.fill_reports()] == [COID]
    assert c.submit(_order()).status is OrderStatus.FILLED and model.count("place_order") == 0


# -------------------------------------------------------------------------------- history

def test_resolution_and_chunks() -> None:
    assert [resolution(t) for t in ("1m", "5m", "1h", "1d")] == ["1", "5", "60", "D"]
    with pytest.raises(UserInputError):
        resolution("7m")
    cs = chunks(date(2024, 1, 1), date(2024, 12, 31), 100)
    assert cs[0] == (date(2024, 1, 1), date(2024, 4, 9)) and cs[-1][1] == date(2024, 12, 31)
    assert all((b - a).days < 100 for a, b in cs) and len(cs) == 4


def test_candles_keep_session_bars_and_drop_the_unclosed_one() -> None:
    t = lambda s: int(pd.Timestamp(s).value // 10**9)  # noqa: E731
    candles = [[t("2024-01-02 09:10+05:30"), 1, 1, 1, 1, 1], [t("2024-01-02 09:15+05:30"), 10, 11, 9, 10.5, 100],
               [t("2024-01-02 09:20+05:30"), 10.5, 12, 10, 11, 200]]
    f = candles_to_frame(candles, "5m", now_ns=pd.Timestamp("2024-01-02 09:24+05:30").value)
    assert list(f.index) == [pd.Timestamp("2024-01-02 09:15+05:30")]
    d = candles_to_frame([[t("2024-01-02 05:30+05:30"), 1, 2, 0.5, 1.5, 9]], "1d")
    assert d.index[0] == pd.Timestamp("2024-01-02 00:00+05:30")


def test_fetch_history_is_chunked_and_resumes_from_the_store(tmp_path) -> None:
    from tradebot.features.store import Store

    def answer(payload):
        a, b = pd.Timestamp(payload["range_from"]), pd.Timestamp(payload["range_to"])
        days = pd.bdate_range(a, b)
        candles = [[int(pd.Timestamp(d).tz_localize("Asia/Kolkata").value // 10**9), 10, 11, 9, 10, 100] for d in days]
        return {"s": "ok", "candles": candles}, fakes.OK

    model = fakes.FakeFyersModel()
    model.handlers["history"] = answer
    rest = FyersRest(model, limiter=RateLimiter(), http_info=model.http)
    store = Store(tmp_path)
    b = fetch_history(rest, "NSE:SBIN-EQ", "1d", "2021-01-01", "2023-12-31", store=store)
    assert model.count("history") == 3 and len(b) == len(pd.bdate_range("2021-01-01", "2023-12-31"))
    model.calls.clear()
    fetch_history(rest, "NSE:SBIN-EQ", "1d", "2021-01-01", "2023-12-31", store=store)
    assert model.count("history") == 1  # only the last stored day again
    model.script("history", ({"s": "error", "code": -300, "message": "Invalid symbol"}, fakes.OK))
    model.handlers.clear()
    with pytest.raises(UserInputError, match="not a valid Fyers symbol"):
        fetch_history(rest, "NSE:NOPE-EQ", "5m", "2024-01-01", "2024-01-05")


# ---------------------------------------------------------------------------------- feed

class _Clock:
    def __init__(self, ns):
        self.ns = ns

    def now_ns(self):
        return self.ns


def test_feed_ticks_volume_from_day_volume_and_watchdog_backfills() -> None:
    fakes.FakeDataSocket.instances.clear()
    t0 = pd.Timestamp("2024-01-02 09:15:10+05:30")
    clock = _Clock(t0.value)
    model = fakes.FakeFyersModel()
    s = lambda x: int(pd.Timestamp(x).value // 10**9)  # noqa: E731
    model.script("history", {"s": "ok", "candles": [[s("2024-01-02 09:15+05:30"), 100, 102, 99, 101, 50],
                                                    [s("2024-01-02 09:16+05:30"), 101, 103, 100, 102, 60],
                                                    [s("2024-01-02 09:17+05:30"), 102, 104, 101, 103, 70]]})
    rest = FyersRest(model, limiter=RateLimiter(), http_info=model.http)
    feed = FyersDataFeed(fakes.FakeDataSocket, timeframe="1m", rest=rest, clock=clock, heartbeat_s=0.05,
                         stall_s=0.3, watchdog_s=0.05, market_open=lambda ns: True)
    feed.subscribe(["NSE:SBIN-EQ"])
    sock = fakes.FakeDataSocket.instances[-1]
    sock.send({"type": "sf", "symbol": "NSE:SBIN-EQ", "ltp": 100.0, "vol_traded_today": 1000,
               "last_traded_qty": 5, "last_traded_time": s("2024-01-02 09:15:10+05:30")})
    sock.send({"type": "sf", "symbol": "NSE:SBIN-EQ", "ltp": 101.0, "vol_traded_today": 1030,
               "last_traded_time": s("2024-01-02 09:15:20+05:30")})
    sock.send({"type": "sf", "symbol": "NSE:OTHER-EQ", "ltp": 1.0})  # not subscribed
    clock.ns = pd.Timestamp("2024-01-02 09:18:05+05:30").value  # three minutes pass without prints
    deadline = time.monotonic() + 5
    while feed.reconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert feed.reconnects >= 1 and sock.stopped == 1 and len(fakes.FakeDataSocket.instances) >= 2
    out = []
    for ev in feed:
        if not hasattr(ev, "price") and not hasattr(ev, "open"):
            if len(out) >= 5:
                break
            continue
        out.append(ev)
        if len(out) >= 5:
            break
    feed.close()
    ticks = [e for e in out if isinstance(e, Tick)]
    bars = [e for e in out if isinstance(e, Bar)]
    assert [t.volume for t in ticks] == [5.0, 30.0]
    assert [b.ts for b in bars] == [pd.Timestamp(f"2024-01-02 09:1{m}+05:30").value for m in (5, 6, 7)]
    assert math.isclose(bars[0].close, 101)
    assert Endpoints.from_base("http://127.0.0.1:9").order_ws == "ws://127.0.0.1:9/trade/v3"


def test_backfilled_bars_are_validated_like_any_input() -> None:
    """Defect 14: the backfill turned whatever history answered into bars (a NaN, a high below the low)."""
    from tradebot.live.adapters.fyers.data import history_bars

    model = fakes.FakeFyersModel()
    s = lambda x: int(pd.Timestamp(x).value // 10**9)  # noqa: E731
    model.script("history", {"s": "ok", "candles": [[s("2024-01-02 09:15+05:30"), 100, 102, 99, 101, 50],
                                                    [s("2024-01-02 09:16+05:30"), 101, 99, 103, 102, 60],
                                                    [s("2024-01-02 09:17+05:30"), 102, float("nan"), 101, 103, 70],
                                                    [s("2024-01-02 09:18+05:30"), 103, 104, 0, 103, 10],
                                                    [s("2024-01-02 09:19+05:30"), 103, 104, 102, 103, -5],
                                                    [s("2024-01-02 09:20+05:30"), 103, 105, 102, 104, 80]]})
    rest = FyersRest(model, limiter=RateLimiter(), http_info=model.http)
    bars = history_bars(rest, "NSE:SBIN-EQ", "1m", pd.Timestamp("2024-01-02 09:15+05:30").value,
                        pd.Timestamp("2024-01-02 09:30+05:30").value)
    assert [b.ts for b in bars] == [pd.Timestamp(f"2024-01-02 09:{m}+05:30").value for m in (15, 20)]


def test_live_loop_refuses_without_risk_config_and_confirmation(tmp_path) -> None:
    from tradebot.live.adapters.fyers.loops import LIVE_FLAGS, build_fyers_live_loop, build_fyers_paper_loop
    from tradebot.live.risk import RiskConfig

    for kw in ({}, {"risk_config": RiskConfig()}, {"i_understand_real_money": True}):
        with pytest.raises(UserInputError) as info:
            build_fyers_live_loop(["NSE:SBIN-EQ"], journal=tmp_path / "j.db", policy=lambda s, o: 0, **kw)
        assert LIVE_FLAGS in str(info.value)
    with pytest.raises(UserInputError, match="not found"):
        build_fyers_live_loop(["NSE:SBIN-EQ"], journal=tmp_path / "j.db", policy=lambda s, o: 0,
                              risk_config=tmp_path / "missing.yaml", i_understand_real_money=True)
    model = fakes.FakeFyersModel()
    rest = FyersRest(model, limiter=RateLimiter(), http_info=model.http)
    feed = FyersDataFeed(fakes.FakeDataSocket, timeframe="5m", rest=rest)
    c, _, _ = _client()
    # defect 2: files that set no limits were accepted with the default limits
    for text, says in (("", "sets no limits"), ("risks:\n  max_position: 7\n", "did you mean 'risk'"),
                       ("live:\n  loop:\n    run: x\n", "unknown top-level key 'live'"),
                       ("risk:\n", "sets no limits"), ("risk:\n  max_position: 7\n", "add max_notional"),
                       ("risk:\n  max_position: 7\n  max_notional: 1e5\n  max_daily_loss: 0.01\n  max_drawdown: 0.05\n"
                        "  max_positon: 3\n", "unknown config key 'max_positon'")):
        (tmp_path / "bad.yaml").write_text(text)
        with pytest.raises(UserInputError, match=says):
            build_fyers_live_loop(["NSE:SBIN-EQ"], journal=tmp_path / "j.db", policy=lambda s, o: 0, rest=rest,
                                  feed=feed, client=c, history={"NSE:SBIN-EQ": None}, timeframe="5m",
                                  risk_config=tmp_path / "bad.yaml", i_understand_real_money=True)
    (tmp_path / "risk.yaml").write_text("risk:\n  max_position: 7\n  max_notional: 100000\n  max_daily_loss: 0.01\n"
                                        "  max_drawdown: 0.05\n")
    loop = build_fyers_live_loop(["NSE:SBIN-EQ"], journal=tmp_path / "live.db", policy=lambda s, o: 0, rest=rest,
                                 feed=feed, client=c, history={"NSE:SBIN-EQ": None}, timeframe="5m",
                                 risk_config=tmp_path / "risk.yaml", i_understand_real_money=True)
    assert loop.broker is c and loop.risk.config.max_position == 7 and feed.on_tick is not None
    loop.journal.close()
    paper = build_fyers_paper_loop(["NSE:SBIN-EQ"], journal=tmp_path / "paper.db", policy=lambda s, o: 0, rest=rest,
                                   feed=FyersDataFeed(fakes.FakeDataSocket, timeframe="5m", rest=rest),
                                   history={"NSE:SBIN-EQ": None}, timeframe="5m")
    assert paper.broker.name == "paper" and model.count("place_order") == 0
    paper.journal.close()
