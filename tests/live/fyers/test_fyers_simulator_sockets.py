"""The simulator's data socket (binary HSM) and order socket, driven by the real fyers_apiv3 socket clients."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tradebot.live.adapters.fyers.simulator import FyersSimulator, sdk_patch

pytestmark = pytest.mark.timeout(60)

NIFTY = "NSE:NIFTY50-INDEX"
SBIN = "NSE:SBIN-EQ"
SBIN_FILE = Path(__file__).resolve().parents[3] / "data" / "sample" / "NSE_SBIN-EQ_1d.csv.gz"


def wait_for(predicate, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


class Feed:
    """A FyersDataSocket that subscribes in on_connect (again after each reconnect) and records callbacks."""

    def __init__(self, sdk, symbols, lite=False, data_type="SymbolUpdate", token=None):
        self.messages, self.errors, self.closed, self.connects = [], [], [], 0
        self.symbols, self.data_type = symbols, data_type
        self.lock = threading.Lock()
        self.ds = sdk.data_ws.FyersDataSocket(
            access_token=token or sdk.access_token, log_path=sdk.log_path, litemode=lite, reconnect=True,
            on_message=self._on_message, on_error=self.errors.append, on_connect=self._on_connect,
            on_close=self.closed.append, reconnect_retry=3)
        self.sim = sdk.sim

    def _on_connect(self):
        self.connects += 1
        self.ds.subscribe(symbols=self.symbols, data_type=self.data_type)

    def _on_message(self, message):
        with self.lock:
            self.messages.append(message)

    def ticks(self, kind=None):
        with self.lock:
            return [m for m in self.messages if "ltp" in m or "bid_price1" in m if kind is None or m["type"] == kind]

    def controls(self, kind):
        with self.lock:
            return [m for m in self.messages if m.get("type") == kind and "code" in m]

    def connect(self, snapshots: int = 1):
        self.ds.connect()
        assert wait_for(lambda: len(self.ticks()) >= snapshots), (self.messages, self.errors)

    def close(self):
        sdk_patch.close_data_socket(self.ds, self.sim)


@pytest.fixture
def sbin_sdk(fyers_sdk, tmp_path):
    """fyers_sdk's namespace, but on a simulator replaying SBIN daily bars (an equity: sf and dp topics)."""
    from fyers_apiv3.FyersWebsocket import data_ws, order_ws

    with FyersSimulator(data=[SBIN_FILE], token_ttl_s=3600) as sim, sdk_patch.pointed_at(sim):
        token = sim.login(fyers_sdk.app_id)
        yield type(fyers_sdk)(sim=sim, app_id=fyers_sdk.app_id, token=token, access_token=f"{fyers_sdk.app_id}:{token}",
                              log_path=fyers_sdk.log_path, data_ws=data_ws, order_ws=order_ws)


def test_full_mode_index_ticks_follow_the_bar(fyers_sdk, fyers_sample_bars):
    feed = Feed(fyers_sdk, [NIFTY])
    try:
        feed.connect()
        assert [m["type"] for m in feed.messages[:3]] == ["cn", "ful", "sub"]
        snapshot = feed.ticks()[0]
        assert snapshot["symbol"] == NIFTY and snapshot["ltp"] == 15168.15  # the close before the session
        fyers_sdk.sim.advance(4)
        assert wait_for(lambda: len(feed.ticks()) == 5)
        bar = fyers_sample_bars.frame.loc["2021-03-12"].iloc[0]
        ltps = [m["ltp"] for m in feed.ticks()[1:]]
        assert ltps == [bar.open, bar.high, bar.low, bar.close]  # a falling bar: open, high, low, close
        last = feed.ticks()[-1]
        assert last["type"] == "if" and last["prev_close_price"] == 15168.15
        assert last["high_price"] == bar.high and last["low_price"] == bar.low and last["open_price"] == bar.open
        assert last["exch_feed_time"] == int(bar.name.timestamp()) + 45
        assert last["ch"] == round(bar.close - 15168.15, 2)
        assert feed.errors == []
    finally:
        feed.close()
    assert feed.closed  # on_close ran: restart was off


def test_lite_mode_equity_ltp_only(sbin_sdk):
    feed = Feed(sbin_sdk, [SBIN], lite=True)
    try:
        feed.connect()
        assert "lit" in [m["type"] for m in feed.messages]
        sbin_sdk.sim.advance(4)
        want = sbin_sdk.sim.ltp(SBIN)
        # the snapshot plus the updates; wait for the last one (under load they arrive late)
        assert wait_for(lambda: len(feed.ticks()) >= 4 and feed.ticks()[-1]["ltp"] == want)
        last = feed.ticks()[-1]
        assert set(last) == {"ltp", "symbol", "type"} and last["symbol"] == SBIN
    finally:
        feed.close()


def test_full_mode_equity_fields_and_depth(sbin_sdk):
    feed = Feed(sbin_sdk, [SBIN])
    try:
        feed.connect()
        feed.ds.subscribe(symbols=[SBIN], data_type="DepthUpdate")
        assert wait_for(lambda: feed.ticks("dp"))
        sbin_sdk.sim.advance(1)
        assert wait_for(lambda: len(feed.ticks("sf")) >= 2 and len(feed.ticks("dp")) >= 2)
        sf = feed.ticks("sf")[-1]
        expected = {"ltp", "vol_traded_today", "last_traded_time", "exch_feed_time", "bid_size", "ask_size",
                    "bid_price", "ask_price", "last_traded_qty", "tot_buy_qty", "tot_sell_qty", "avg_trade_price",
                    "low_price", "high_price", "lower_ckt", "upper_ckt", "open_price", "prev_close_price", "type",
                    "symbol", "ch", "chp"}
        assert set(sf) == expected and sf["symbol"] == SBIN
        assert sf["bid_price"] == pytest.approx(sf["ltp"] - 0.05) and sf["ask_price"] == pytest.approx(sf["ltp"] + 0.05)
        dp = feed.ticks("dp")[-1]
        assert dp["symbol"] == SBIN and dp["bid_price1"] == pytest.approx(sf["ltp"] - 0.05)
        assert dp["ask_price5"] == pytest.approx(sf["ltp"] + 0.25) and dp["bid_size1"] == 100
    finally:
        feed.close()


def test_order_socket_pushes_order_trade_position(fyers_sdk):
    got = {"orders": [], "trades": [], "positions": [], "general": []}
    sock = fyers_sdk.order_ws.FyersOrderSocket(
        access_token=fyers_sdk.access_token, log_path=fyers_sdk.log_path, on_orders=got["orders"].append,
        on_trades=got["trades"].append, on_positions=got["positions"].append, on_general=got["general"].append,
        on_error=got["general"].append, on_connect=lambda: sock.subscribe("OnOrders,OnTrades,OnPositions,OnGeneral"))
    try:
        sock.connect()
        assert wait_for(lambda: got["general"])
        assert got["general"][0] == {"code": 1605, "message": "Successfully subscribed", "s": "ok"}
        placed = fyers_sdk.model.place_order({"symbol": NIFTY, "qty": 50, "type": 2, "side": 1,
                                              "productType": "INTRADAY", "orderTag": "abc123"})
        assert wait_for(lambda: got["orders"])
        assert got["orders"][0]["orders"]["status"] == 6 and got["orders"][0]["orders"]["orderTag"] == "1:abc123"
        fyers_sdk.sim.advance(1)
        assert wait_for(lambda: got["positions"])
        order = got["orders"][-1]["orders"]
        assert order["id"] == placed["id"] and order["status"] == 2 and order["tradedPrice"] == 15327.65
        trade = got["trades"][0]["trades"]
        assert trade["orderNumber"] == placed["id"] and trade["tradedQty"] == 50 and trade["orderTag"] == "1:abc123"
        position = got["positions"][0]["positions"]
        assert position["netQty"] == 50 and position["id"] == f"{NIFTY}-INTRADAY" and position["netAvg"] == 15327.65
    finally:
        sdk_patch.close_order_socket(sock, fyers_sdk.sim)


def test_order_socket_refuses_a_bad_token(fyers_sdk):
    import websocket

    with pytest.raises(websocket.WebSocketBadStatusException) as err:
        websocket.create_connection(fyers_sdk.sim.order_ws_url, header={"authorization": "APP:a.b.c"}, timeout=5)
    assert err.value.status_code == 403


def test_data_socket_with_a_dead_token_fails_auth(fyers_sdk):
    fyers_sdk.sim.inject("expire_tokens")
    feed = Feed(fyers_sdk, [NIFTY])
    feed.ds.OnOpen = None  # no subscribe: only the auth reply matters
    try:
        feed.ds.connect()
        assert wait_for(lambda: feed.errors)
        assert feed.errors[0]["code"] == 11001
    finally:
        feed.close()


def test_drop_then_sdk_reconnects_and_resubscribes(fyers_sdk):
    feed = Feed(fyers_sdk, [NIFTY])
    try:
        feed.connect()
        assert fyers_sdk.sim.inject("drop_sockets", which="data") == 1
        assert wait_for(lambda: feed.connects == 2 and len(feed.controls("sub")) == 2, timeout=15)
        assert wait_for(lambda: len(feed.ticks()) == 2)  # the new snapshot
        fyers_sdk.sim.advance(1)
        assert wait_for(lambda: len(feed.ticks()) == 3)
        assert feed.ticks()[-1]["ltp"] == 15327.65
        assert feed.closed == []  # a drop with reconnect on does not call on_close
    finally:
        feed.close()


def test_stalled_ticks_then_resume(fyers_sdk):
    feed = Feed(fyers_sdk, [NIFTY])
    try:
        feed.connect()
        fyers_sdk.sim.inject("stall_ticks")
        fyers_sdk.sim.advance(3)
        time.sleep(0.3)
        assert len(feed.ticks()) == 1 and fyers_sdk.sim.connections()["data"] == 1  # silent, still open
        fyers_sdk.sim.inject("resume_ticks")
        assert wait_for(lambda: len(feed.ticks()) == 2)
        assert feed.ticks()[-1]["ltp"] == 15291.40  # the market went on meanwhile
        fyers_sdk.sim.advance(1)
        assert wait_for(lambda: len(feed.ticks()) == 3)
    finally:
        feed.close()
