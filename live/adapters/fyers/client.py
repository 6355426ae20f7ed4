"""``FyersExecutionClient``: the broker port (``tradebot.live.ports.ExecutionClient``) on the fyers-apiv3 SDK.

```python
client = FyersExecutionClient.from_token(token)          # auth.FyersToken (tradebot fyers login)
client.connect()                                         # profile check, orderbook/trades/positions/funds, order socket
update = client.submit(order)                            # OrderRequest -> POST /orders/sync
events = client.poll_events()                            # order/trade updates pushed by the order socket
```

Orders. ``OrderRequest`` is a market order with bracket distances; ``FyersOrder`` (a subclass) adds
``limit_price`` / ``stop_price`` / ``validity`` for ``order_type`` LIMIT, STOP (SL-M) and STOP_LIMIT (SL-L),
so the port stays as it is. Products: ``equity_intraday`` -> INTRADAY, ``equity_delivery``/``delivery``
-> CNC, ``index_futures``/``futures`` -> MARGIN. The bracket distances of an entry go out as Fyers'
TP/SL overlay (``stopLoss``/``takeProfit`` in points, ``legType`` 1) unless ``bracket=False``.

Idempotency. Our client order id (20 chars ``[0-9A-Z]``) travels as ``orderTag`` (Fyers allows 1-30
alphanumerics; the orderbook echoes it as ``1:<tag>``), so every order can be found by our id. Fyers does
not refuse a second order with the same tag, so an order is never sent blind: ``submit`` answers a known
id from local state; it resends only after a failure that proves Fyers never got the request (a 429, a
connection that never opened); after any other failure (a timeout, a dropped connection, a 5xx) the
order may be at Fyers, and it looks the id up in the order book and the trade book (``resolve_tries``
times, backing off, as the books lag); not found, it raises ``RetryableError`` and the caller keeps the
order UNKNOWN and goes on looking it up (``order_status``). Code 201 ("sent, not acknowledged") is
looked up too. A failure that proves nothing was sent, after the retries, is ``OrderNotSent``.

State. ``connect`` loads the orderbook, tradebook, positions and funds once (REST), then the order
socket keeps it current: order updates, trades (-> ``Fill``) and positions arrive on SDK threads and go
into a locked state plus an event queue that ``poll_events`` drains. ``position_reports`` /
``account_report`` answer from that state (no REST per bar); funds are re-read at most every
``funds_refresh_s`` and only after a trade, and the P&L realized since the last read (from the socket's
positions) is added to them, so equity never lags a closed trade. Whenever the order socket is not
subscribed (dropped, reconnecting, or abandoned by the SDK after its retries), ``poll_events`` polls the
orderbook and tradebook every ``poll_interval_s``; once it is subscribed again everything is re-read
(what happened while it was down); an abandoned socket is started afresh every ``socket_restart_s``.
``resync`` re-reads everything on demand (the loop's periodic position check).

Fyers status codes: 1 cancelled, 2 traded, 4 transit, 5 rejected, 6 pending, 7 expired (3 unused).
Fills carry no charges from Fyers: with ``order_cost(price, qty, is_buy)`` (the engine's cost schedule,
``tradebot.envs.fill_rules.FillRules.order_cost``) each fill's ``costs`` is that estimate, flagged
``costs_estimated``, and an exit's ``realized_pnl`` is net of both orders' estimated costs; ``kind`` is ``entry`` for an order that opened a
position, else the exit reason of our intent (``signal`` for EXIT, ``square_off`` for FLATTEN) or, for an
order that is not ours (a triggered TP/SL leg), ``stop``/``take_profit`` by the price it filled at.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any


from tradebot.live.adapters.fyers.error_translation import FyersRejected, ReauthRequired, RetryPolicy
from tradebot.live.adapters.fyers.fyers_records import (
    EXIT_KIND,
    ORDER_TYPES,
    PRODUCTS,
    STATUS_MAP,
    TAG_RE,
    FyersOrder,
    OrderRecord,
    PositionBook,
    fyers_status,
    num,
    parse_time_ns,
    round_tick,
    tag_of,
)
from tradebot.live.adapters.fyers.rest import FyersRest, payload_of
from tradebot.core.nse_time import bar_start_for
from tradebot.live.ports import (
    AccountReport,
    OrderNotSent,
    Clock,
    ExecutionClient,
    Fill,
    OrderRequest,
    OrderStatus,
    OrderUpdate,
    PositionReport,
    Side,
    WallClock,
)
from tradebot.core.errors import RejectedError, RetryableError

log = logging.getLogger("tradebot.fyers")

class FyersExecutionClient(ExecutionClient):
    """See the module docstring."""

    name = "fyers"

    def __init__(self, rest: FyersRest, *, access_token: str | None = None, order_socket: bool = True,
                 socket_factory: Callable[..., Any] | None = None, clock: Clock | None = None,
                 submit_retry: RetryPolicy = RetryPolicy(retries=2, backoff_s=0.5),
                 timeframe: str | None = None, bracket: bool = True, tick_size: float = 0.05,
                 funds_refresh_s: float = 5.0, poll_interval_s: float = 2.0, socket_wait_s: float = 8.0,
                 sleep: Callable[[float], None] = time.sleep, verify_profile: bool = True,
                 order_cost: Callable[[float, float, bool], float] | None = None, resolve_tries: int = 3,
                 socket_restart_s: float = 30.0):
        """``rest``: the paced REST wrapper; ``access_token``: ``APPID:TOKEN`` for the order socket (None:
        no socket, poll instead); ``timeframe``: label fills with the bar they fell in (as the paper broker does)."""
        self.rest = rest
        self._socket_token = access_token
        self.use_order_socket = order_socket and access_token is not None
        self._socket_factory = socket_factory
        self.clock = clock or WallClock()
        self.submit_retry = submit_retry
        self.timeframe = timeframe
        self.bracket = bracket
        self.tick_size = tick_size
        self.funds_refresh_s = funds_refresh_s
        self.poll_interval_s = poll_interval_s
        self.socket_wait_s = socket_wait_s
        self.verify_profile = verify_profile
        self.order_cost = order_cost
        self.resolve_tries = resolve_tries
        self.socket_restart_s = socket_restart_s
        self._sleep = sleep
        self._socket_was_live = False
        self._socket_started_at = -math.inf
        self._traded: dict[str, float] = {}  # client order id -> quantity traded (partial fills added up)
        self._lock = threading.RLock()
        self._orders: dict[str, OrderRecord] = {}
        self._restored: dict[str, OrderRequest] = {}  # the journal's requests (restore_requests), by our id
        self._by_broker: dict[str, str] = {}
        self._fills: dict[str, Fill] = {}
        self._books: dict[str, PositionBook] = {}
        self._net: dict[str, dict[str, float]] = {}  # position id (SYMBOL-PRODUCT) -> netQty, netAvg, pnl
        self._marks: dict[str, float] = {}
        self._events: deque[OrderUpdate | Fill] = deque()
        self._funds: dict[str, float] = {}
        self._funds_realized = 0.0  # our realized P&L when the funds were read (their total includes it)
        self._funds_at = -math.inf
        self._funds_dirty = False
        self._last_poll = -math.inf
        self._socket: Any = None
        self._connected = False
        self.profile: dict[str, Any] = {}
        self.send_counts: dict[str, int] = {}  # place_order calls per client order id (tests: never twice)

    def __repr__(self) -> str:  # never the token
        return f"FyersExecutionClient(connected={self._connected}, orders={len(self._orders)})"

    @classmethod
    def from_token(cls, token: Any, *, endpoints: Any = None, log_path: Any = None, limiter: Any = None,
                   **kwargs: Any) -> "FyersExecutionClient":
        """A client for an ``auth.FyersToken`` on the real SDK (REST + order socket)."""
        from tradebot.live.adapters.fyers.rest import Endpoints, make_model
        from tradebot.live.adapters.fyers.sockets import OrderSocket

        endpoints = endpoints or Endpoints.resolve()
        model = make_model(token.app_id, token.secret(), endpoints=endpoints, log_path=log_path)
        rest = FyersRest(model, limiter=limiter)

        def factory(**kw: Any) -> OrderSocket:
            return OrderSocket(token.socket_token(), endpoints=endpoints, log_path=log_path, **kw)

        kwargs.setdefault("socket_factory", factory)
        return cls(rest, access_token=token.socket_token(), **kwargs)

    # ------------------------------------------------------------------------ lifecycle
    @property
    def socket_live(self) -> bool:
        s = self._socket
        return s is not None and s.subscribed.is_set()

    def connect(self) -> None:
        if self._connected:
            return
        if self.verify_profile:
            try:
                self.profile = self.rest.call("get_profile").get("data") or {}
                if self.profile.get("fy_id"):
                    self.account_id = f"fyers:{self.profile['fy_id']}"
            except ReauthRequired:
                raise
            except RejectedError as err:
                raise ReauthRequired(f"{err}; the Fyers login is not accepted: log in again with: tradebot fyers login") \
                    from err
        self.refresh()
        self._read_funds()
        if self.use_order_socket and self._socket_factory is not None:
            self._start_socket()
            if not self._socket.subscribed.wait(self.socket_wait_s):
                log.warning("fyers order socket not subscribed after %.0f s; polling the orderbook instead",
                            self.socket_wait_s)
            else:
                self.refresh()  # anything that happened between the REST load and the subscription
                self._socket_was_live = True
        self._connected = True

    def _start_socket(self) -> None:
        self._socket = self._socket_factory(on_order=self._on_socket_order, on_trade=self._on_socket_trade,
                                            on_position=self._on_socket_position)
        self._socket_started_at = time.monotonic()
        self._socket.start()

    def _watch_socket(self) -> None:
        """Polling's side of the socket: re-read everything once it is subscribed again; start an abandoned
        one afresh (in the background: the SDK's connect waits)."""
        live = self.socket_live
        if live and not self._socket_was_live:
            log.info("fyers order socket subscribed again; re-reading orders, trades and positions")
            self.refresh(emit=True)
        self._socket_was_live = live
        sock = self._socket
        if (not live and sock is not None and getattr(sock, "abandoned", False)
                and time.monotonic() - self._socket_started_at >= self.socket_restart_s):
            log.warning("fyers order socket abandoned by the SDK after its reconnects; starting a new one")
            sock.stop(wait=False)
            self._socket_started_at = time.monotonic()
            threading.Thread(target=self._start_socket, name="fyers-order-socket-restart", daemon=True).start()

    def resync(self) -> None:
        """Re-read the orderbook, tradebook and positions over REST now; changes come out of ``poll_events``."""
        if self._connected:
            self.refresh(emit=True)
            self._funds_dirty = True

    def restore_requests(self, requests: Sequence[OrderRequest]) -> None:
        """The loop's journaled requests, before ``connect``: the orderbook and tradebook read at connect then
        rebuild each position's stop / take-profit and the exit kinds as the process that sent them knew them
        (Fyers echoes our id, not our brackets), so a restart does not find the positions without a stop."""
        with self._lock:
            for r in requests:
                self._restored[r.client_order_id] = r
                rec = self._orders.get(r.client_order_id)
                if rec is not None and rec.request is None:
                    rec.request = r

    def disconnect(self) -> None:
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.stop(wait=False)
        self._connected = False

    # --------------------------------------------------------------------------- orders
    def _payload(self, order: OrderRequest) -> dict[str, Any]:
        coid = order.client_order_id
        if not TAG_RE.match(coid):
            raise FyersRejected(f"fyers: client order id {coid!r} cannot be an orderTag (1-30 letters/digits)")
        product = PRODUCTS.get(order.product)
        if product is None:
            raise FyersRejected(f"fyers: product {order.product!r} unknown; use one of {', '.join(sorted(PRODUCTS))}")
        otype = ORDER_TYPES.get(order.order_type.upper())
        if otype is None:
            raise FyersRejected(f"fyers: order type {order.order_type!r} unknown; use MARKET, LIMIT, STOP or STOP_LIMIT")
        if not (order.qty > 0 and float(order.qty).is_integer()):
            raise FyersRejected(f"fyers: quantity {order.qty} must be a positive whole number")
        limit = getattr(order, "limit_price", math.nan)
        stop = getattr(order, "stop_price", math.nan)
        if otype in (1, 4) and not (limit > 0):
            raise FyersRejected(f"fyers: a {order.order_type} order needs limit_price > 0")
        if otype in (3, 4) and not (stop > 0):
            raise FyersRejected(f"fyers: a {order.order_type} order needs stop_price > 0")
        body: dict[str, Any] = {
            "symbol": order.symbol, "qty": int(order.qty), "type": otype, "side": order.side.sign,
            "productType": product, "limitPrice": round_tick(limit, self.tick_size) if otype in (1, 4) else 0,
            "stopPrice": round_tick(stop, self.tick_size) if otype in (3, 4) else 0,
            "validity": getattr(order, "validity", "DAY"), "disclosedQty": 0, "offlineOrder": False,
            "orderTag": coid,
        }
        if self.bracket and not order.reduce_only:
            legs = {"stopLoss": order.stop_loss, "takeProfit": order.take_profit}
            legs = {k: round_tick(v, self.tick_size) for k, v in legs.items() if v is not None and v > 0}
            if legs:
                body.update(legs)
                body["legType"] = 1
        return body

    def submit(self, order: OrderRequest) -> OrderUpdate:
        coid = order.client_order_id
        with self._lock:
            known = self._orders.get(coid)
            if known is not None:
                if known.request is None:
                    known.request = order
                return known.update()
        body = self._payload(order)
        now = self.clock.now_ns()
        attempt = 0
        while True:
            self.send_counts[coid] = self.send_counts.get(coid, 0) + 1
            try:
                resp = self.rest.once("place_order", body)
                break
            except FyersRejected as err:
                with self._lock:
                    rec = self._orders.get(coid)
                    if rec is None:
                        rec = self._orders[coid] = OrderRecord(coid, order.symbol, OrderStatus.REJECTED, now, order.side,
                                                               order.qty, reason=err.fyers_message or str(err),
                                                               request=order)
                raise
            except RetryableError as err:
                if getattr(err, "maybe_sent", True):  # it may be at Fyers: find it, never send it again
                    found = self._resolve(coid, order)
                    if found is not None:
                        return found
                    raise RetryableError(f"{err}; {coid} may be at Fyers but is in neither its order book nor its "
                                         f"trade book after {self.resolve_tries} looks (never sent again)") from err
                if attempt >= self.submit_retry.retries:
                    raise OrderNotSent(f"{err} ({attempt + 1} tries; the order was not sent)",
                                       retry_after=err.retry_after) from err
                self._sleep(self.submit_retry.delay(attempt, err))
                attempt += 1
        if isinstance(resp, OrderUpdate):
            return resp
        broker_id = str(resp.get("id") or "") or None
        if resp.get("code") == 201 or broker_id is None:  # sent, not acknowledged: ask the orderbook
            found = self._lookup(coid, order)
            if found is not None:
                return found
        with self._lock:
            rec = self._orders.get(coid)
            if rec is None:
                rec = self._orders[coid] = OrderRecord(coid, order.symbol, OrderStatus.ACCEPTED, now, order.side, order.qty,
                                                reason="" if broker_id else "sent; not acknowledged yet",
                                                broker_id=broker_id, request=order)
            else:  # the socket was faster than the REST reply
                rec.request = rec.request or order
                rec.broker_id = rec.broker_id or broker_id
            if broker_id:
                self._by_broker[broker_id] = coid
            return rec.update()

    def _resolve(self, coid: str, order: OrderRequest) -> OrderUpdate | None:
        """After a submit that may have reached Fyers: look the id up ``resolve_tries`` times, backing off."""
        for attempt in range(self.resolve_tries):
            if attempt:
                self._sleep(min(self.submit_retry.backoff_s * 2 ** (attempt - 1), self.submit_retry.max_sleep_s))
            try:
                found = self._lookup(coid, order)
            except RetryableError as err:
                log.warning("fyers look-up of %s failed: %s", coid, err)
                continue
            if found is not None:
                return found
        return None

    def _lookup(self, coid: str, order: OrderRequest | None = None) -> OrderUpdate | None:
        """Ask the orderbook for our id (the ``order_tag`` filter, checked here as well), then the tradebook
        (an order can show in the tradebook before the orderbook has it)."""
        resp = self.rest.call("orderbook", {"order_tag": f"1:{coid}"})
        found = None
        with self._lock:
            for item in payload_of(resp, "orderBook"):
                if tag_of(item.get("orderTag")) == coid:
                    found = self._apply_order(item, emit=True)
        if found is None:
            trades = [t for t in payload_of(self.rest.call("tradebook"), "tradeBook")
                      if tag_of(t.get("orderTag")) == coid]
            if trades:
                with self._lock:
                    first = trades[0]
                    side = Side.BUY if int(num(first, "side", default=1)) > 0 else Side.SELL
                    qty = sum(abs(num(t, "tradedQty")) for t in trades)
                    rec = self._orders.get(coid)
                    if rec is None:
                        rec = self._orders[coid] = OrderRecord(
                            coid, str(first.get("symbol", "")), OrderStatus.FILLED, self.clock.now_ns(), side,
                            order.qty if order is not None else qty, filled_qty=qty,
                            avg_price=sum(abs(num(t, "tradedQty")) * num(t, "tradePrice") for t in trades) / qty,
                            broker_id=str(first.get("orderNumber") or "") or None,
                            request=order or self._restored.get(coid))
                        if rec.broker_id:
                            self._by_broker[rec.broker_id] = coid
                        self._events.append(rec.update())
                    for t in sorted(trades, key=lambda t: str(t.get("tradeNumber"))):
                        self._apply_trade(t, emit=True)
                    found = rec
        with self._lock:
            if found is not None and order is not None and found.request is None:
                found.request = order
            return found.update() if found is not None else None

    def cancel(self, client_order_id: str) -> OrderUpdate:
        with self._lock:
            rec = self._orders.get(client_order_id)
        if rec is None or rec.broker_id is None:
            found = self._lookup(client_order_id)
            with self._lock:
                rec = self._orders.get(client_order_id)
            if found is None or rec is None or rec.broker_id is None:
                raise FyersRejected(f"fyers: unknown order {client_order_id}")
        if rec.status.terminal:
            return rec.update()
        try:
            self.rest.call("cancel_order", {"id": rec.broker_id})
        except FyersRejected:
            found = self._lookup(client_order_id)  # already traded / cancelled?
            if found is not None and found.status.terminal:
                return found
            raise
        with self._lock:
            if not rec.status.terminal:
                rec.status, rec.ts, rec.reason = OrderStatus.CANCELED, self.clock.now_ns(), "canceled by request"
                self._events.append(rec.update())
            return rec.update()

    def modify(self, client_order_id: str, *, qty: float | None = None, limit_price: float | None = None,
               stop_price: float | None = None, order_type: str | None = None) -> OrderUpdate:
        """Change a working order (PATCH /orders/sync); the socket reports the result."""
        with self._lock:
            rec = self._orders.get(client_order_id)
        if rec is None or rec.broker_id is None:
            raise FyersRejected(f"fyers: unknown order {client_order_id}")
        if rec.status.terminal:
            raise FyersRejected(f"fyers: order {client_order_id} is {rec.status.value}; nothing to modify")
        otype = ORDER_TYPES.get((order_type or (rec.request.order_type if rec.request else "MARKET")).upper(), 2)
        body: dict[str, Any] = {"id": rec.broker_id, "type": otype}
        if qty is not None:
            body["qty"] = int(qty)
        if limit_price is not None:
            body["limitPrice"] = round_tick(limit_price, self.tick_size)
        if stop_price is not None:
            body["stopPrice"] = round_tick(stop_price, self.tick_size)
        self.rest.call("modify_order", body)
        with self._lock:
            if qty is not None:
                rec.qty = float(qty)
            rec.ts = self.clock.now_ns()
            return rec.update()

    def cancel_all(self, symbol: str | None = None) -> list[OrderUpdate]:
        with self._lock:
            working = [r.client_order_id for r in self._orders.values()
                       if not r.status.terminal and r.broker_id and (symbol is None or r.symbol == symbol)]
        out = []
        for coid in working:
            try:
                out.append(self.cancel(coid))
            except RejectedError as err:
                log.warning("fyers cancel_all: %s", err)
        return out

    # -------------------------------------------------------------------------- reports
    def order_status(self, client_order_id: str) -> OrderUpdate | None:
        with self._lock:
            rec = self._orders.get(client_order_id)
            if rec is not None and (rec.status.terminal or self.socket_live):
                return rec.update()
        return self._lookup(client_order_id)

    def order_status_reports(self) -> list[OrderUpdate]:
        self._refresh_orders(emit=False)
        with self._lock:
            return [r.update() for r in self._orders.values()]

    def fill_reports(self, since_ns: int | None = None) -> list[Fill]:
        with self._lock:
            return [f for f in self._fills.values() if since_ns is None or f.ts >= since_ns]

    def position_reports(self) -> list[PositionReport]:
        with self._lock:
            out = []
            for sym in sorted(self._symbols_held()):
                qty, avg = self._net_position(sym)
                if qty == 0.0:
                    continue
                b = self._books.get(sym, PositionBook())
                out.append(PositionReport(symbol=sym, qty=qty, avg_price=avg, stop_price=b.stop,
                                          take_profit_price=b.take_profit, opened_ts=b.opened_ts,
                                          position_id=b.position_id))
            return out

    def account_report(self) -> AccountReport:
        if self._funds_dirty and time.monotonic() - self._funds_at >= self.funds_refresh_s:
            try:
                self._read_funds()
            except RetryableError as err:  # stale funds are better than no answer
                log.warning("fyers funds refresh failed: %s", err)
        with self._lock:
            total = self._funds.get("total", 0.0)
            cash = self._funds.get("available", total)
            unreal, realized = self._pnl_total()
            # the funds are re-read at most every funds_refresh_s: the P&L realized since (socket-kept) is added
            equity = total + (realized - self._funds_realized) + unreal
            costs = sum(f.costs for f in self._fills.values())
            return AccountReport(ts=self.clock.now_ns(), equity=equity, cash=cash, realized_pnl=realized, costs=costs,
                                 day_start_equity=self._funds.get("day_start", math.nan))

    def _pnl_total(self) -> tuple[float, float]:
        unreal = realized = 0.0
        for sym in self._symbols_held() | set(self._net_symbols()):
            u, r = self._pnl(sym)
            unreal += u
            realized += r
        return unreal, realized

    def poll_events(self) -> list[OrderUpdate | Fill]:
        if self._connected and self.use_order_socket:
            try:
                self._watch_socket()
            except RetryableError as err:
                log.warning("fyers re-read after the socket came back failed: %s", err)
                self._socket_was_live = False  # try again at the next poll
        if self._connected and not self.socket_live and time.monotonic() - self._last_poll >= self.poll_interval_s:
            try:
                self.refresh(emit=True)
            except RetryableError as err:
                log.warning("fyers poll failed: %s", err)
        with self._lock:
            out = list(self._events)
            self._events.clear()
            return out

    def mark(self, symbol: str, price: float) -> None:
        """The last traded price of ``symbol`` (the data feed calls it): equity is marked at it."""
        if price > 0:
            self._marks[symbol] = float(price)

    # --------------------------------------------------------------------------- state
    def refresh(self, emit: bool = False) -> None:
        """Re-read orderbook, tradebook and positions over REST (start-up; polling without the socket)."""
        self._last_poll = time.monotonic()
        self._refresh_orders(emit)
        trades = payload_of(self.rest.call("tradebook"), "tradeBook")
        trades.sort(key=lambda t: (parse_time_ns(t.get("orderDateTime"), 0), str(t.get("tradeNumber"))))
        with self._lock:
            for t in trades:
                self._apply_trade(t, emit)
        positions = payload_of(self.rest.call("positions"), "netPositions")
        with self._lock:
            for p in positions:
                self._apply_position(p)

    def _refresh_orders(self, emit: bool) -> None:
        items = payload_of(self.rest.call("orderbook"), "orderBook")
        with self._lock:
            for item in items:
                self._apply_order(item, emit)

    def _read_funds(self) -> None:
        resp = self.rest.call("funds")
        funds: dict[str, float] = {}
        for row in payload_of(resp, "fund_limit"):
            title = str(row.get("title", "")).lower()
            rid = row.get("id")
            amount = num(row, "equityAmount")
            if rid == 1 or title == "total balance":
                funds["total"] = amount
            elif rid == 10 or title == "available balance":
                funds["available"] = amount
            elif rid == 9 or title == "limit at start of the day":
                funds["day_start"] = amount
        with self._lock:
            self._funds = funds
            self._funds_realized = self._pnl_total()[1]
            self._funds_at = time.monotonic()
            self._funds_dirty = False

    def _coid_for(self, item: Mapping[str, Any], broker_id: str | None) -> str:
        tag = tag_of(item.get("orderTag"))
        if tag:
            return tag
        if broker_id and broker_id in self._by_broker:
            return self._by_broker[broker_id]
        return f"FY{broker_id}" if broker_id else ""

    def _apply_order(self, item: Mapping[str, Any], emit: bool) -> OrderRecord | None:
        broker_id = str(item.get("id") or "") or None
        coid = self._coid_for(item, broker_id)
        if not coid:
            return None
        status = fyers_status(item.get("status"))
        now = self.clock.now_ns()
        ts = parse_time_ns(item.get("orderDateTime"), now)
        filled = num(item, "filledQty")
        avg = num(item, "tradedPrice", default=math.nan)
        rec = self._orders.get(coid)
        if rec is None:
            side = Side.BUY if int(num(item, "side", default=1)) > 0 else Side.SELL
            rec = self._orders[coid] = OrderRecord(coid, str(item.get("symbol", "")), status, ts, side, num(item, "qty"),
                                            request=self._restored.get(coid))
            changed = True
        else:
            # never step back: a terminal status stays; a working one only moves forward
            if rec.status.terminal and status != rec.status:
                changed = False
            else:
                changed = status != rec.status or filled != rec.filled_qty
            if changed:
                rec.status, rec.ts = status, max(ts, rec.ts)
        if changed or rec.broker_id is None:
            rec.filled_qty = filled if filled or not rec.filled_qty else rec.filled_qty
            if avg and avg > 0:
                rec.avg_price = avg
            msg = str(item.get("message") or "")
            if status in (OrderStatus.REJECTED, OrderStatus.CANCELED, OrderStatus.EXPIRED) and msg:
                rec.reason = msg
        if broker_id:
            rec.broker_id = rec.broker_id or broker_id
            self._by_broker[broker_id] = coid
        if changed and emit:
            self._events.append(rec.update())
        return rec

    def _apply_trade(self, t: Mapping[str, Any], emit: bool) -> Fill | None:
        fill_id = str(t.get("tradeNumber") or "")
        if not fill_id or fill_id in self._fills:
            return None
        broker_id = str(t.get("orderNumber") or "") or None
        coid = self._coid_for(t, broker_id)
        symbol = str(t.get("symbol", ""))
        side = Side.BUY if int(num(t, "side", default=1)) > 0 else Side.SELL
        qty = abs(num(t, "tradedQty"))
        price = num(t, "tradePrice")
        ts = parse_time_ns(t.get("orderDateTime"), self.clock.now_ns())
        if self.timeframe:
            ts = bar_start_for(ts, self.timeframe) or ts
        rec = self._orders.get(coid)
        req = rec.request if rec is not None and rec.request is not None else self._restored.get(coid)
        book = self._books.setdefault(symbol, PositionBook())
        signed = qty * side.sign
        costs = float(self.order_cost(price, qty, side is Side.BUY)) if self.order_cost is not None else 0.0
        estimated = self.order_cost is not None
        if book.qty == 0.0 or (book.qty > 0) == (signed > 0):  # opens or adds
            new_qty = book.qty + signed
            book.avg = price if book.qty == 0.0 else (book.avg * abs(book.qty) + price * qty) / abs(new_qty)
            if book.qty == 0.0:
                book.position_id, book.opened_ts, book.entry_costs = coid, ts, 0.0
                if req is not None:
                    book.stop = price - side.sign * req.stop_loss if req.stop_loss else math.nan
                    book.take_profit = price + side.sign * req.take_profit if req.take_profit else math.nan
                else:
                    book.stop = book.take_profit = math.nan
            book.qty = new_qty
            book.entry_costs += costs
            fill = Fill(fill_id=fill_id, client_order_id=coid, position_id=book.position_id, symbol=symbol, side=side,
                        qty=qty, price=price, costs=costs, ts=ts, kind="entry", stop_price=book.stop,
                        take_profit_price=book.take_profit, costs_estimated=estimated)
        else:  # reduces (or flips)
            closed = min(qty, abs(book.qty))
            entry_share = book.entry_costs * closed / abs(book.qty)
            exit_share = costs * closed / qty
            pnl = (price - book.avg) * closed * (1 if book.qty > 0 else -1) - entry_share - exit_share
            book.entry_costs -= entry_share
            if req is not None:
                kind = EXIT_KIND.get(req.intent, "signal")
            elif math.isfinite(book.stop) and math.isfinite(book.take_profit):
                kind = "stop" if abs(price - book.stop) <= abs(price - book.take_profit) else "take_profit"
            else:
                kind = "signal"
            fill = Fill(fill_id=fill_id, client_order_id=coid, position_id=book.position_id, symbol=symbol, side=side,
                        qty=qty, price=price, costs=costs, ts=ts, kind=kind, realized_pnl=pnl,
                        costs_estimated=estimated)
            book.qty += signed
            if abs(book.qty) < 1e-9:
                self._books[symbol] = PositionBook()
            elif (book.qty > 0) == (signed > 0):  # flipped through zero: the rest opens a new position
                book.avg, book.position_id, book.opened_ts = price, coid, ts
                book.stop = book.take_profit = math.nan
                book.entry_costs = costs - exit_share
        self._fills[fill_id] = fill
        self._funds_dirty = True
        self._traded[coid] = self._traded.get(coid, 0.0) + qty
        if rec is not None and rec.status is not OrderStatus.FILLED:  # the trades imply progress (added up)
            rec.filled_qty = max(rec.filled_qty, self._traded[coid])
        if emit:
            self._events.append(fill)
        return fill

    def _apply_position(self, p: Mapping[str, Any]) -> None:
        pid = str(p.get("id") or f"{p.get('symbol')}-{p.get('productType')}")
        self._net[pid] = {"symbol": str(p.get("symbol", "")), "qty": num(p, "netQty"),
                          "avg": num(p, "netAvg", "avgPrice", default=math.nan),
                          "realized": num(p, "realized_profit"), "unrealized": num(p, "unrealized_profit")}

    def _net_symbols(self) -> list[str]:
        return [str(v["symbol"]) for v in self._net.values()]

    def _symbols_held(self) -> set[str]:
        return {s for s in self._net_symbols() if s} | {s for s, b in self._books.items() if b.qty != 0.0}

    def _net_position(self, symbol: str) -> tuple[float, float]:
        rows = [v for v in self._net.values() if v["symbol"] == symbol]
        book = self._books.get(symbol)
        if rows:
            qty = sum(float(v["qty"]) for v in rows)
            open_rows = [v for v in rows if v["qty"]]
            avg = open_rows[0]["avg"] if len(open_rows) == 1 else (book.avg if book else math.nan)
            if book is not None and book.qty == qty and math.isfinite(book.avg):
                avg = book.avg if not math.isfinite(avg) else avg
            return qty, float(avg)
        return (book.qty, book.avg) if book is not None else (0.0, math.nan)

    def _pnl(self, symbol: str) -> tuple[float, float]:
        rows = [v for v in self._net.values() if v["symbol"] == symbol]
        realized = sum(float(v["realized"]) for v in rows)
        qty, avg = self._net_position(symbol)
        mark = self._marks.get(symbol)
        if mark is not None and qty and math.isfinite(avg):
            unreal = (mark - avg) * qty
        else:
            unreal = sum(float(v["unrealized"]) for v in rows)
        if not rows:  # no position rows yet: realized from our fills
            realized = sum(f.realized_pnl for f in self._fills.values()
                           if f.symbol == symbol and math.isfinite(f.realized_pnl))
        return unreal, realized

    # -------------------------------------------------------------- socket callbacks
    def _on_socket_order(self, item: dict) -> None:
        with self._lock:
            self._apply_order(item, emit=True)

    def _on_socket_trade(self, item: dict) -> None:
        with self._lock:
            self._apply_trade(item, emit=True)

    def _on_socket_position(self, item: dict) -> None:
        with self._lock:
            self._apply_position(item)


def describe(client: FyersExecutionClient) -> dict[str, Any]:
    """Loggable facts about a client (what may go into logs and MLflow params: never the token)."""
    return {"broker": client.name, "bracket": client.bracket, "tick_size": client.tick_size,
            "order_socket": client.use_order_socket, "timeframe": client.timeframe,
            "rate_limits": repr(client.rest.limiter.limits)}


__all__ = ["FyersExecutionClient", "FyersOrder", "STATUS_MAP", "fyers_status", "describe"]
