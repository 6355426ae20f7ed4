"""The adapter with the REAL fyers-apiv3 SDK against the local simulator on 127.0.0.1.

Login (auth-code flow), history across the 366-day chunk boundary (resumable into the store), orders
placed and filled with the order socket's updates reaching ``poll_events``, a paper session on the data
socket (FyersDataFeed -> TradingLoop -> PaperBroker) writing bars and decisions to a journal, and the
recovery from each injected fault: 5xx, 429 + Retry-After, token expiry (ReauthRequired, no retries),
socket drop (the SDK reconnects, we re-subscribe), tick stall (watchdog reconnect + backfill) and a
slow answer (timeout -> retry, the order looked up, never sent twice).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from tradebot.live.adapters.fyers.auth import AuthSettings, FyersToken, exchange, load_token, login_url, save_token
from tradebot.live.adapters.fyers.client import FyersExecutionClient
from tradebot.live.adapters.fyers.data import FyersDataFeed, default_socket_factory, fetch_history
from tradebot.live.adapters.fyers.error_translation import ReauthRequired, RetryPolicy
from tradebot.live.adapters.fyers.ratelimit import RateLimiter, RateLimits
from tradebot.live.adapters.fyers.rest import Endpoints, FyersRest, make_model
from tradebot.live.adapters.fyers.sockets import OrderSocket, wait_for
from tradebot.core.errors import RetryableError
from tradebot.live.ports import Bar, Heartbeat, Intent, OrderNotSent, OrderRequest, OrderStatus, Side, Tick

pytest.importorskip("fyers_apiv3")
sim_mod = pytest.importorskip("tradebot.live.adapters.fyers.simulator")
sdk_patch = pytest.importorskip("tradebot.live.adapters.fyers.simulator.sdk_patch")

pytestmark = pytest.mark.timeout(120)

ROOT = __import__("pathlib").Path(__file__).resolve().parents[3]
NIFTY_1M = str(ROOT / "data" / "sample" / "NSE_NIFTY50-INDEX_1m.csv.gz")
SBIN_1D = str(ROOT / "data" / "sample" / "NSE_SBIN-EQ_1d.csv.gz")
NIFTY = "NSE:NIFTY50-INDEX"
APP = "SIMAPP-100"


class SimClock:
    """The exchange's clock as the simulator keeps it (its replay runs on the sample's historical time)."""

    def __init__(self, sim) -> None:
        self.sim = sim

    def now_ns(self) -> int:
        return int(self.sim.now()) * 1_000_000_000


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    s = sim_mod.FyersSimulator(data=[NIFTY_1M])
    s.start()
    undo = sdk_patch.point_sdk_at(s)
    yield s
    undo()
    s.stop()


@pytest.fixture
def env(sim, tmp_path):
    sim.reset()
    token = FyersToken.from_access_token(APP, sim.login(APP))
    ep = Endpoints.from_base(sim.base_url)
    yield token, ep, tmp_path
    sim.clear_faults()


def _rest(token, ep, tmp_path, *, timeout=(2.0, 5.0), retries=2, sleeps=None) -> FyersRest:
    model = make_model(token.app_id, token.secret(), endpoints=ep, log_path=tmp_path / "logs", timeout=timeout)
    return FyersRest(model, limiter=RateLimiter(RateLimits(per_second=10, per_minute=200)),
                     retry_policy=RetryPolicy(retries=retries, backoff_s=0.2),
                     sleep=(lambda s: (sleeps.append(s), time.sleep(s))) if sleeps is not None else time.sleep)


def _client(token, ep, tmp_path, *, socket=True, sleeps=None, **kw) -> FyersExecutionClient:
    rest = _rest(token, ep, tmp_path, sleeps=sleeps, timeout=kw.pop("timeout", (2.0, 5.0)))
    factory = (lambda **cb: OrderSocket(token.socket_token(), endpoints=ep, log_path=tmp_path / "logs", **cb)) \
        if socket else None
    return FyersExecutionClient(rest, access_token=token.socket_token() if socket else None, socket_factory=factory,
                                sleep=(lambda s: (sleeps.append(s), time.sleep(s))) if sleeps is not None
                                else time.sleep, **kw)


def _order(n: int = 1, qty: float = 50, side: Side = Side.BUY, reduce_only: bool = False, stop_loss: float = 500.0,
           take_profit: float = 1000.0) -> OrderRequest:
    return OrderRequest(client_order_id=f"TB{n:018d}", symbol=NIFTY, side=side, qty=qty,
                        intent=Intent.EXIT if reduce_only else Intent.ENTRY, bar_ts=0, created_ns=0,
                        reduce_only=reduce_only, stop_loss=None if reduce_only else stop_loss,
                        take_profit=None if reduce_only else take_profit)


# ------------------------------------------------------------------------------------ login

def test_login_flow_exchanges_the_auth_code_and_stores_a_0600_token(sim, tmp_path) -> None:
    settings = AuthSettings(APP, "sim-secret", "https://127.0.0.1/cb", api_base=sim.base_url)
    url = login_url(settings)
    assert url.startswith(sim.base_url + "/api/v3/generate-authcode?") and "client_id=SIMAPP-100" in url
    redirect = requests.get(url, allow_redirects=False, timeout=5).headers["Location"]  # the sim auto-approves
    assert parse_qs(urlparse(redirect).query)["auth_code"]
    token = exchange(settings, redirect)
    path = save_token(token, tmp_path / "tok.json")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    back = load_token(path)
    assert back.expires_at > time.time() and back.api_base == sim.base_url
    profile = FyersRest(make_model(APP, back.secret(), endpoints=Endpoints.from_base(sim.base_url),
                                   log_path=tmp_path / "logs"), limiter=RateLimiter()).call("get_profile")
    assert profile["data"]["fy_id"]


# ---------------------------------------------------------------------------------- history

def test_history_across_chunk_boundaries_and_resume_from_the_store(tmp_path) -> None:
    from tradebot.features.store import Store

    with sim_mod.FyersSimulator(data=[SBIN_1D]) as daily:  # its clock: the sample's last session (2025-09-30)
        token = FyersToken.from_access_token(APP, daily.login(APP))
        _history_checks(_rest(token, Endpoints.from_base(daily.base_url), tmp_path), Store(tmp_path / "store"))


def _history_checks(rest, store) -> None:
    seen: list[tuple[int, int]] = []
    bars = fetch_history(rest, "NSE:SBIN-EQ", "1d", "2021-01-01", "2023-12-31", store=store,
                         progress=lambda d, t: seen.append((d, t)))
    assert rest.calls["history"] == 3 and seen[-1] == (3, 3)  # 3 years -> three <=366-day requests
    idx = bars.index
    assert idx.is_unique and idx.is_monotonic_increasing
    assert str(idx[0].date()) >= "2021-01-01" and str(idx[-1].date()) <= "2023-12-31"
    assert any(d.year == 2022 for d in idx) and any(d.year == 2023 for d in idx)  # no hole at the boundaries
    n = len(bars)
    rest.calls.clear()
    again = fetch_history(rest, "NSE:SBIN-EQ", "1d", "2021-01-01", "2024-06-30", store=store)
    assert rest.calls["history"] == 1  # only the part the store lacks (from the last stored day)
    assert len(again) > n and store.read("NSE:SBIN-EQ", "1d").index.is_unique


# ----------------------------------------------------------------------------------- orders

def test_orders_fill_and_socket_updates_reach_poll_events(sim, env) -> None:
    token, ep, tmp_path = env
    c = _client(token, ep, tmp_path, timeframe="1m")
    c.connect()
    try:
        assert c.socket_live
        u = c.submit(_order(1))
        assert u.status is OrderStatus.ACCEPTED and u.broker_order_id
        assert c.submit(_order(1)).broker_order_id == u.broker_order_id  # idempotent
        sim.advance(4)
        # the order update and the trade are separate order-socket messages: either may come first
        events: list = []

        def filled_and_traded() -> bool:
            events.extend(c.poll_events())
            return (any(hasattr(e, "status") and e.status is OrderStatus.FILLED for e in events)
                    and any(not hasattr(e, "status") for e in events))

        assert wait_for(filled_and_traded, 10.0)
        fills = [e for e in events if not hasattr(e, "status")]
        assert len(fills) == 1 and fills[0].kind == "entry" and fills[0].qty == 50
        assert fills[0].client_order_id == "TB" + "1".zfill(18)
        assert [p.qty for p in c.position_reports()] == [50.0]
        assert wait_for(lambda: c._net, 10.0)  # the positions message arrived on the socket
        # exit, then limit order modify + cancel
        c.submit(_order(2, side=Side.SELL, reduce_only=True))
        sim.advance(4)
        assert wait_for(lambda: not c.position_reports(), 10.0)
        later: list = []
        assert wait_for(lambda: later.extend(c.poll_events()) or any(not hasattr(e, "status") for e in later), 10.0)
        exit_fill = [e for e in later if hasattr(e, "realized_pnl") and not hasattr(e, "status")]
        assert exit_fill and exit_fill[-1].kind == "signal" and exit_fill[-1].position_id == fills[0].position_id
        from tradebot.live.adapters.fyers.client import FyersOrder
        lim = FyersOrder(client_order_id="TB" + "3".zfill(18), symbol=NIFTY, side=Side.BUY, qty=50,
                         intent=Intent.ENTRY, bar_ts=0, created_ns=0, order_type="LIMIT",
                         limit_price=round(sim.ltp(NIFTY) * 0.9, 1))
        assert c.submit(lim).status is OrderStatus.ACCEPTED
        c.modify(lim.client_order_id, limit_price=round(sim.ltp(NIFTY) * 0.8, 1))
        assert [x.status for x in c.cancel_all(NIFTY)] == [OrderStatus.CANCELED]
        assert len(sim.orders()) == 3  # nothing was sent twice
        assert {r.client_order_id for r in c.order_status_reports()} >= {"TB" + str(i).zfill(18) for i in (1, 2, 3)}
    finally:
        c.disconnect()


# ----------------------------------------------------------------------------------- faults

def test_fault_5xx_on_submit_is_looked_up_never_resent(sim, env) -> None:
    """A 5xx may come from a gateway that passed the order on: the id is looked up, never sent again."""
    token, ep, tmp_path = env
    c = _client(token, ep, tmp_path, socket=False)
    c.connect()
    sim.inject("http_error", status=503, body="html", count=1, route="/orders/sync")
    c.rest.calls.clear()
    with pytest.raises(RetryableError) as info:
        c.submit(_order(5))
    assert not isinstance(info.value, OrderNotSent) and "never sent again" in str(info.value)
    assert c.send_counts == {_order(5).client_order_id: 1} and c.rest.calls["orderbook"] == 3
    assert sim.orders() == []  # this 503 came before the order was placed: nothing there, nothing resent


def test_fault_429_retry_after_is_honoured(sim, env) -> None:
    token, ep, tmp_path = env
    sleeps: list[float] = []
    c = _client(token, ep, tmp_path, socket=False, sleeps=sleeps)
    c.connect()
    sim.inject("rate_limit", retry_after=1.0, count=1, route="/orders/sync")
    t0 = time.monotonic()
    c.submit(_order(6))
    assert time.monotonic() - t0 >= 1.0 and 1.0 in sleeps
    assert len(sim.orders()) == 1


def test_fault_token_expiry_is_fatal_and_never_retried(sim, env) -> None:
    token, ep, tmp_path = env
    c = _client(token, ep, tmp_path, socket=False)
    c.connect()
    sim.inject("expire_tokens")
    c.rest.calls.clear()
    with pytest.raises(ReauthRequired, match="tradebot fyers login"):
        c.submit(_order(7))
    assert c.rest.calls == {"place_order": 1}
    with pytest.raises(ReauthRequired):
        _client(token, ep, tmp_path, socket=False).connect()


def test_fault_slow_answer_times_out_and_is_retried(sim, env) -> None:
    token, ep, tmp_path = env
    c = _client(token, ep, tmp_path, socket=False, timeout=(1.0, 0.5),
                submit_retry=RetryPolicy(retries=2, backoff_s=1.5))
    c.connect()
    sim.inject("delay", seconds=1.0, count=1, route="/api/v3/orders", method="GET")
    c.rest.calls.clear()
    assert c.order_status_reports() == [] and c.rest.calls["orderbook"] == 2
    # a slow order: the attempt times out; the id is looked up in the order book and trade book, not resent
    sim.inject("delay", seconds=1.0, count=1, route="/orders/sync", method="POST")
    c.rest.calls.clear()
    with pytest.raises(RetryableError):
        c.submit(_order(8))
    assert c.send_counts == {_order(8).client_order_id: 1} and c.rest.calls["orderbook"] == 3
    assert len(sim.orders()) <= 1  # placed at most once, whatever the server did with the late request


def test_reply_lost_after_commit_with_a_lagging_book_is_found_and_placed_exactly_once(sim, env) -> None:
    """Defect 1 on the real SDK: the order is committed but its reply is lost, and the order book and trade
    book do not show it for 2 s. The client never sends it again; it finds it once the books catch up."""
    token, ep, tmp_path = env
    c = _client(token, ep, tmp_path, socket=False, submit_retry=RetryPolicy(retries=2, backoff_s=1.0))
    c.connect()
    sim.inject("book_lag", seconds=2.0)
    sim.inject("lose_reply", count=1, route="/orders/sync")
    u = c.submit(_order(9))
    assert u.status is OrderStatus.ACCEPTED and u.broker_order_id  # found by its tag in the books
    assert c.send_counts == {_order(9).client_order_id: 1}
    assert [o["orderTag"] for o in sim.orders()] == ["1:" + _order(9).client_order_id]  # exactly one order
    # with a lag longer than the client looks, it stays unknown: raised for the loop, still never resent
    sim.inject("book_lag", seconds=30.0)
    sim.inject("lose_reply", count=1, route="/orders/sync")
    with pytest.raises(RetryableError):
        c.submit(_order(10))
    assert c.send_counts[_order(10).client_order_id] == 1 and len(sim.orders()) == 2
    sim.inject("book_lag", seconds=0.0)
    found = c.order_status(_order(10).client_order_id)  # what the loop's look-ups do
    assert found is not None and found.status is OrderStatus.ACCEPTED


def test_a_dead_order_socket_falls_back_to_rest_polling_and_refreshes_when_it_is_back(sim, env) -> None:
    """Defect 5: the order socket dies for good (handshakes refused, the SDK's reconnects run out): the
    client notices (the socket is no longer live) and polls REST, so a fill made meanwhile still arrives."""
    token, ep, tmp_path = env
    c = _client(token, ep, tmp_path, timeframe="1m", poll_interval_s=0.2)
    c.connect()
    try:
        assert c.socket_live
        assert sim.inject("refuse_sockets", which="order") == 1
        assert wait_for(lambda: not c.socket_live, 5.0)  # old code: `subscribed` was never cleared
        c.submit(_order(11))
        sim.advance(4)
        events: list = []
        assert wait_for(lambda: events.extend(c.poll_events()) or any(not hasattr(e, "status") for e in events), 10)
        sim.inject("accept_sockets", which="order")
        assert wait_for(lambda: c.socket_live, 20.0)  # the SDK reconnected
        before = c.rest.calls.get("tradebook", 0)
        c.poll_events()
        assert c.rest.calls.get("tradebook", 0) == before + 1  # re-read once it is live again
    finally:
        c.disconnect()


def test_the_paced_simulator_fills_a_market_order_against_the_current_quote(tmp_path) -> None:
    """Daily bars at speed 60: a market order used to wait for the next replayed print (about 94 s)."""
    with sim_mod.FyersSimulator(data=[SBIN_1D], speed=60.0) as daily:
        token = FyersToken.from_access_token(APP, daily.login(APP))
        c = _client(token, Endpoints.from_base(daily.base_url), tmp_path, socket=False)
        c.connect()
        order = OrderRequest(client_order_id="TB" + "12".zfill(18), symbol="NSE:SBIN-EQ", side=Side.BUY, qty=1,
                             intent=Intent.ENTRY, bar_ts=0, created_ns=0)
        t0 = time.monotonic()
        c.submit(order)
        assert wait_for(lambda: daily.trades(), 5.0), "not filled within 5 s"
        assert time.monotonic() - t0 < 5.0 and daily.trades()[0]["tradePrice"] == pytest.approx(
            daily.ltp("NSE:SBIN-EQ"), abs=0.05)


def _drain(feed, until, timeout: float) -> list:
    got: list = []
    end = time.monotonic() + timeout
    for ev in feed:
        if not isinstance(ev, Heartbeat):
            got.append(ev)
        if until(got) or time.monotonic() > end:
            break
    return got


def test_fault_socket_drop_reconnects_and_resubscribes(sim, env) -> None:
    token, ep, tmp_path = env
    sockets: list = []

    def factory(symbols, **kw):
        s = default_socket_factory(token, endpoints=ep, log_path=tmp_path / "logs")(symbols, **kw)
        sockets.append(s)
        return s

    feed = FyersDataFeed(factory, timeframe="1m", clock=SimClock(sim), heartbeat_s=0.1, stall_s=60)
    feed.subscribe([NIFTY])
    try:
        sim.advance(2)
        assert _drain(feed, lambda g: len(g) >= 2, 10)
        assert sim.inject("drop_sockets", which="data") == 1
        assert wait_for(lambda: sockets[0].subscribes >= 2, 15)  # the SDK reconnected; on_connect subscribed again
        sim.advance(2)
        after = _drain(feed, lambda g: any(isinstance(e, Tick) for e in g), 10)
        assert any(isinstance(e, Tick) for e in after)
        assert feed.reconnects == 0  # the SDK's own reconnect did it, not the watchdog
    finally:
        feed.close()


def test_fault_tick_stall_watchdog_reconnects_and_backfills(sim, env) -> None:
    token, ep, tmp_path = env
    rest = _rest(token, ep, tmp_path)
    feed = FyersDataFeed(default_socket_factory(token, endpoints=ep, log_path=tmp_path / "logs"), timeframe="1m",
                         rest=rest, clock=SimClock(sim), heartbeat_s=0.1, stall_s=1.0, watchdog_s=0.2,
                         market_open=lambda ns: True)
    feed.subscribe([NIFTY])
    try:
        sim.advance(4)
        first = _drain(feed, lambda g: len(g) >= 4, 10)
        last_tick = max(e.ts for e in first if isinstance(e, Tick))
        sim.inject("stall_ticks")
        sim.advance(4 * 3)  # three bars pass with no prints on the socket
        assert wait_for(lambda: feed.reconnects >= 1 and feed.backfilled >= 2, 20), \
            (feed.reconnects, feed.backfilled, rest.calls, last_tick, sim.now(), feed.backfills[-2:])
        sim.inject("resume_ticks")
        got = _drain(feed, lambda g: sum(isinstance(e, Bar) for e in g) >= 2, 10)
        bars = [e for e in got if isinstance(e, Bar)]
        assert len(bars) >= 2 and all(b.symbol == NIFTY and b.timeframe == "1m" for b in bars)
        assert bars[0].ts <= last_tick < bars[0].end or bars[0].ts > last_tick  # from the stalled bar on
        assert [b.ts for b in bars] == sorted(b.ts for b in bars)
    finally:
        feed.close()


def test_an_entry_bracket_closes_the_position_at_the_broker_and_reaches_the_loop_as_its_exit(sim, env) -> None:
    token, ep, tmp_path = env
    c = _client(token, ep, tmp_path, timeframe="1m")
    c.connect()
    try:
        entry = c.submit(_order(7, stop_loss=1.0, take_profit=1.0))  # a 1-point bracket: the next prints hit it
        assert entry.status is OrderStatus.ACCEPTED
        events: list = []

        def exited() -> bool:
            sim.advance(1)
            events.extend(c.poll_events())
            return any(not hasattr(e, "status") and e.kind != "entry" for e in events)

        assert wait_for(exited, 15.0)
        fills = [e for e in events if not hasattr(e, "status")]
        entry_fill, exit_fill = fills[0], fills[-1]
        assert entry_fill.kind == "entry" and entry_fill.stop_price == pytest.approx(entry_fill.price - 1.0)
        assert exit_fill.kind in ("stop", "take_profit") and exit_fill.position_id == entry_fill.position_id
        assert exit_fill.side is Side.SELL and exit_fill.qty == entry_fill.qty
        moved = exit_fill.price - entry_fill.price
        assert (moved <= -1.0 if exit_fill.kind == "stop" else moved >= 1.0)
        assert exit_fill.realized_pnl == pytest.approx(moved * entry_fill.qty)
        assert wait_for(lambda: not c.position_reports(), 10.0)
        book = {o["id"]: o for o in sim.orders()}
        legs = [o for o in book.values() if o.get("parentId")]
        assert len(book) == 2 and len(legs) == 1 and legs[0]["orderTag"] == "2:Untagged"
    finally:
        c.disconnect()


# ---------------------------------------------------------------------------- paper session

def test_paper_run_on_the_data_socket_writes_bars_and_decisions(sim, env) -> None:
    from tradebot.envs.engine import Action
    from tradebot.features.pipeline import FeatureConfig
    from tradebot.live.adapters.fyers.loops import build_fyers_paper_loop
    from tradebot.live.runner import LiveConfig

    token, ep, tmp_path = env
    features = FeatureConfig.model_validate({
        "returns": {"horizons": [1]}, "trend": {"enabled": False}, "momentum": {"enabled": False},
        "volatility": {"enabled": False}, "volume": {"enabled": False}, "regime": {"enabled": False},
        "calendar": {"enabled": False}, "candles": {"enabled": False}, "normalisation": {"method": "none"}})
    config = LiveConfig.model_validate({"features": features.model_dump(), "loop": {"run": "fy-paper"},
                                        "risk": {"square_off": None, "stale_entry_s": 600, "stale_flatten_s": 1200}})
    calls = {"n": 0}

    def policy(symbol, obs):
        calls["n"] += 1
        return int(Action.BUY_LONG) if calls["n"] == 2 else int(Action.HOLD)

    feed = FyersDataFeed(default_socket_factory(token, endpoints=ep, log_path=tmp_path / "logs"), timeframe="1m",
                         rest=_rest(token, ep, tmp_path), clock=SimClock(sim), heartbeat_s=0.1, stall_s=60)
    loop = build_fyers_paper_loop([NIFTY], journal=tmp_path / "journal.db", policy=policy, config=config,
                                  timeframe="1m", token=token, endpoints=ep, feed=feed, rest=feed.rest,
                                  warmup_days=5, log_path=tmp_path / "logs")
    stop = threading.Event()

    def drive() -> None:
        wait_for(lambda: feed.ticks > 0 or stop.is_set(), 15)
        for _ in range(6 * 4):  # six 1-minute bars
            if stop.is_set():
                return
            sim.advance(1)
            time.sleep(0.05)
        time.sleep(0.5)
        feed.close()

    t = threading.Thread(target=drive, daemon=True)
    loop.start()  # reconcile, then subscribe (the socket connects here)
    t.start()
    try:
        for ev in feed:
            loop.handle(ev)
        loop.finish()
    finally:
        stop.set()
        t.join(5)
        loop.journal.close()
    db = sqlite3.connect(tmp_path / "journal.db")
    n_bars = db.execute("SELECT COUNT(*) FROM bars").fetchone()[0]
    n_dec = db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
    assert n_bars >= 4 and n_dec >= 4
    assert sim.orders() == []  # paper: nothing ever went to Fyers
