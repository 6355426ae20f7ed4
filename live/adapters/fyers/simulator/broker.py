"""The simulated broker: order validation, matching against the market's ticks, trades, positions, funds.

Matching (whole quantity, no partial fills, no volume limit):

* MARKET (type 2) fills at the first tick after it was placed, at that tick's price moved by
  ``slippage_bps`` against the order (rounded to the tick size); with ``fill_at_quote`` (the paced
  simulator's default) it fills at once against the current quote while the market is open, as an
  exchange does, instead of waiting for the next replayed print.
* LIMIT (1): a buy fills at the first tick with price <= limit (touch), a sell at price >= limit. At its
  first tick a marketable order fills at the tick's price (price improvement); later at its limit.
* SL-M (3): a buy triggers at the first tick with price >= stop, a sell at price <= stop, then fills
  like a market order at that tick. SL-L (4): triggers likewise, then works as a limit at limitPrice.
* ``validity: IOC``: an order not filled at its first tick is cancelled (status 1).

Order statuses: 1 cancelled, 2 traded, 4 transit, 5 rejected, 6 pending, 7 expired. A parameter error
is answered at once with HTTP 400 (-50 invalid parameter, -300 invalid symbol, -390 invalid stop price)
and creates no order; a risk rejection (margin) creates a rejected order (status 5, code -99).

Positions are keyed by symbol and product (id ``NSE:SBIN-EQ-INTRADAY``), with average-cost realized
P&L; margin blocked is the full value for CNC and 1/``intraday_leverage`` of it for INTRADAY/MARGIN.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from tradebot.live.adapters.fyers.simulator.market import IST, Market, SimTick
from tradebot.live.adapters.fyers.simulator.symbols import Instrument
from tradebot.live.adapters.fyers.simulator.tokens import FY_ID

CANCELLED, TRADED, TRANSIT, REJECTED, PENDING, EXPIRED = 1, 2, 4, 5, 6, 7
LIMIT, MARKET, STOP, STOP_LIMIT = 1, 2, 3, 4
PRODUCTS = ("INTRADAY", "CNC", "MARGIN")
_TAG_RE = re.compile(r"^[A-Za-z0-9]{1,30}$")


class OrderError(Exception):
    """A request refused before an order exists (HTTP 400 with this Fyers code)."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def fyers_time(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, IST).strftime("%d-%b-%Y %H:%M:%S")


@dataclass
class Order:
    id: str
    inst: Instrument
    qty: int
    side: int
    type: int
    product: str
    limit_price: float
    stop_price: float
    validity: str
    tag: str  # as echoed: "1:<tag>" or "2:Untagged"
    placed_ts: int
    placed_tick: int
    disclosed_qty: int = 0
    offline: bool = False
    status: int = PENDING
    message: str = ""
    filled_qty: int = 0
    traded_price: float = 0.0
    triggered: bool = False
    update_ts: int = 0
    fresh: bool = True  # no tick of its symbol yet since it was placed or modified
    stop_loss: float = 0.0  # the SDK 3.2.0 TP/SL overlay: distances (legType 1: points, 2: percent of the fill)
    take_profit: float = 0.0
    leg_type: int = 1
    parent_id: str = ""  # the entry whose TP/SL leg this order is
    placed_wall: float = field(default_factory=time.monotonic)  # when it reached the server (book-lag fault)

    @property
    def working(self) -> bool:
        return self.status in (PENDING, TRANSIT)

    def book_item(self, ltp: float) -> dict[str, Any]:
        """The orderbook shape of the REST API (camelCase)."""
        inst = self.inst
        return {
            "clientId": FY_ID, "id": self.id, "id_fyers": self.id, "exchOrdId": f"1100000{self.id[-8:]}"
            if self.status in (TRADED, PENDING, CANCELLED) else "", "qty": self.qty,
            "remainingQuantity": self.qty - self.filled_qty if self.working else 0,
            "filledQty": self.filled_qty, "discloseQty": self.disclosed_qty, "disclosedQty": self.disclosed_qty,
            "dqQtyRem": 0, "limitPrice": self.limit_price, "stopPrice": self.stop_price,
            "tradedPrice": self.traded_price, "type": self.type, "fyToken": inst.fytoken,
            "exchange": inst.exchange, "segment": inst.segment, "symbol": inst.symbol,
            "instrument": inst.instrument_type, "message": self.message, "offlineOrder": self.offline,
            "orderDateTime": fyers_time(self.placed_ts), "orderValidity": self.validity, "pan": "",
            "productType": self.product, "side": self.side, "status": self.status, "source": "ITS",
            "ex_sym": inst.name, "description": inst.name, "ch": 0.0, "chp": 0.0, "lp": ltp, "slNo": 0,
            "orderNumStatus": f"{self.id}:{self.status}", "orderTag": self.tag, "takeProfit": self.take_profit,
            "stopLoss": self.stop_loss, **({"parentId": self.parent_id} if self.parent_id else {}),
        }

    def socket_item(self) -> dict[str, Any]:
        """The raw snake_case shape the order socket pushes (the SDK renames these keys)."""
        inst = self.inst
        return {
            "client_id": FY_ID, "id": self.id, "id_fyers": self.id, "id_parent": self.parent_id,
            "id_exchange": f"1100000{self.id[-8:]}", "qty": self.qty,
            "qty_remaining": self.qty - self.filled_qty if self.working else 0, "qty_filled": self.filled_qty,
            "price_limit": self.limit_price, "price_stop": self.stop_price, "price_traded": self.traded_price,
            "ord_type": self.type, "fy_token": inst.fytoken, "exchange": inst.exchange, "segment": inst.segment,
            "symbol": inst.symbol, "instrument": inst.instrument_type, "oms_msg": self.message,
            "offline_flag": self.offline, "time_oms": fyers_time(self.update_ts or self.placed_ts),
            "validity": self.validity, "product_type": self.product, "tran_side": self.side,
            "org_ord_status": self.status, "ord_status": {PENDING: 20, TRADED: 90, CANCELLED: 50,
                                                          REJECTED: 60}.get(self.status, 20),
            "ord_source": "ITS", "symbol_exch": inst.name, "symbol_desc": inst.name, "ordertag": self.tag,
            "take_profit": 0.0, "stop_loss": 0.0, "leg_type": 0, "report_type": "New Ack",
            "lot_size": inst.lot_size, "tick_size": inst.tick_size, "precision": 2, "price_multiplier": 1,
            "qty_multiplier": 1, "time_epoch_oms": self.update_ts or self.placed_ts,
        }


@dataclass
class Trade:
    number: str
    order: Order
    qty: int
    price: float
    ts: int
    wall: float = field(default_factory=time.monotonic)

    def book_item(self) -> dict[str, Any]:
        o, inst = self.order, self.order.inst
        return {"clientId": FY_ID, "orderDateTime": fyers_time(self.ts), "orderNumber": o.id,
                "exchangeOrderNo": f"1100000{o.id[-8:]}", "exchange": inst.exchange, "side": o.side,
                "segment": inst.segment, "orderType": o.type, "fyToken": inst.fytoken, "productType": o.product,
                "tradedQty": self.qty, "tradePrice": self.price, "tradeValue": round(self.qty * self.price, 2),
                "tradeNumber": self.number, "row": int(self.number[-6:]), "symbol": inst.symbol,
                "orderTag": o.tag}

    def socket_item(self) -> dict[str, Any]:
        o, inst = self.order, self.order.inst
        return {"id_fill": self.number, "id": o.id, "id_fyers": o.id, "qty_traded": self.qty,
                "price_traded": self.price, "traded_val": round(self.qty * self.price, 2),
                "product_type": o.product, "client_id": FY_ID, "id_exchange": f"1100000{o.id[-8:]}",
                "ord_type": o.type, "tran_side": o.side, "symbol": inst.symbol, "fill_time": fyers_time(self.ts),
                "fy_token": inst.fytoken, "exchange": inst.exchange, "segment": inst.segment, "ordertag": o.tag}


@dataclass
class Position:
    inst: Instrument
    product: str
    buy_qty: int = 0
    buy_val: float = 0.0
    sell_qty: int = 0
    sell_val: float = 0.0
    net_qty: int = 0
    avg: float = 0.0  # average cost of the open quantity
    realized: float = 0.0
    legs: tuple[float, float, str] | None = None  # (stop price, target price, entry order id) of the TP/SL overlay

    @property
    def id(self) -> str:
        return f"{self.inst.symbol}-{self.product}"

    def apply(self, side: int, qty: int, price: float) -> None:
        if side == 1:
            self.buy_qty += qty
            self.buy_val += qty * price
        else:
            self.sell_qty += qty
            self.sell_val += qty * price
        signed = side * qty
        if self.net_qty == 0 or (self.net_qty > 0) == (signed > 0):
            total = abs(self.net_qty) + qty
            self.avg = (self.avg * abs(self.net_qty) + price * qty) / total
            self.net_qty += signed
            return
        closing = min(qty, abs(self.net_qty))
        direction = 1 if self.net_qty > 0 else -1
        self.realized += (price - self.avg) * closing * direction
        self.net_qty += signed
        if self.net_qty == 0:
            self.avg = 0.0
        elif (self.net_qty > 0) != (direction > 0):  # flipped through zero
            self.avg = price

    def unrealized(self, ltp: float) -> float:
        return (ltp - self.avg) * self.net_qty if self.net_qty else 0.0

    def _common(self, ltp: float) -> dict[str, Any]:
        return {"buy_avg": round(self.buy_val / self.buy_qty, 2) if self.buy_qty else 0.0,
                "sell_avg": round(self.sell_val / self.sell_qty, 2) if self.sell_qty else 0.0}

    def book_item(self, ltp: float) -> dict[str, Any]:
        inst, unreal = self.inst, round(self.unrealized(ltp), 2)
        avgs = self._common(ltp)
        return {"symbol": inst.symbol, "id": self.id, "netQty": self.net_qty, "qty": abs(self.net_qty),
                "avgPrice": round(self.avg, 2), "netAvg": round(self.avg, 2),
                "side": (self.net_qty > 0) - (self.net_qty < 0), "productType": self.product,
                "realized_profit": round(self.realized, 2), "unrealized_profit": unreal,
                "pl": round(self.realized + unreal, 2), "ltp": ltp, "buyQty": self.buy_qty,
                "buyAvg": avgs["buy_avg"], "buyVal": round(self.buy_val, 2), "sellQty": self.sell_qty,
                "sellAvg": avgs["sell_avg"], "sellVal": round(self.sell_val, 2), "fyToken": inst.fytoken,
                "crossCurrency": "N", "rbiRefRate": 1.0, "qtyMulti_com": 1.0, "segment": inst.segment,
                "exchange": inst.exchange, "cfBuyQty": 0, "cfSellQty": 0, "dayBuyQty": self.buy_qty,
                "daySellQty": self.sell_qty}

    def socket_item(self, ltp: float) -> dict[str, Any]:
        inst, unreal = self.inst, round(self.unrealized(ltp), 2)
        avgs = self._common(ltp)
        return {"symbol": inst.symbol, "id": self.id, "buy_avg": avgs["buy_avg"], "buy_qty": self.buy_qty,
                "buy_val": round(self.buy_val, 2), "sell_avg": avgs["sell_avg"], "sell_qty": self.sell_qty,
                "sell_val": round(self.sell_val, 2), "net_avg": round(self.avg, 2), "net_qty": self.net_qty,
                "tran_side": (self.net_qty > 0) - (self.net_qty < 0), "qty": abs(self.net_qty),
                "product_type": self.product, "pl_realized": round(self.realized, 2), "rbirefrate": 1.0,
                "fy_token": inst.fytoken, "exchange": inst.exchange, "segment": inst.segment,
                "day_buy_qty": self.buy_qty, "day_sell_qty": self.sell_qty, "cf_buy_qty": 0, "cf_sell_qty": 0,
                "qty_multiplier": 1.0, "pl_total": round(self.realized + unreal, 2), "cross_curr_flag": "N",
                "pl_unrealized": unreal}


# An event for the order socket: ("orders" | "trades" | "positions", raw payload)
Event = tuple[str, dict[str, Any]]


@dataclass
class Broker:
    market: Market
    initial_funds: float = 1_000_000.0
    slippage_bps: float = 0.0
    intraday_leverage: float = 5.0
    tradable_indices: bool = True
    fill_at_quote: bool = False
    orders: dict[str, Order] = field(default_factory=dict)
    trades: list[Trade] = field(default_factory=list)
    positions: dict[str, Position] = field(default_factory=dict)
    listeners: list[Callable[[list[Event]], None]] = field(default_factory=list)
    _seq: int = 0

    # ------------------------------------------------------------------ helpers

    def _next_id(self) -> str:
        self._seq += 1
        day = dt.datetime.fromtimestamp(self.market.now, IST).strftime("%y%m%d")
        return f"{day}{self._seq:08d}"

    def ltp(self, symbol: str) -> float:
        return self.market.quotes[symbol].ltp

    def _emit(self, events: list[Event]) -> None:
        if events:
            for listener in list(self.listeners):
                listener(events)

    def margin_used(self) -> float:
        used = 0.0
        for p in self.positions.values():
            value = abs(p.net_qty) * self.ltp(p.inst.symbol)
            used += value if p.product == "CNC" else value / self.intraday_leverage
        return used

    def realized(self) -> float:
        return sum(p.realized for p in self.positions.values())

    def unrealized(self) -> float:
        return sum(p.unrealized(self.ltp(p.inst.symbol)) for p in self.positions.values())

    def available(self) -> float:
        return self.initial_funds + self.realized() - self.margin_used()

    # ------------------------------------------------------------------ requests

    def place(self, body: Any) -> tuple[Order, list[Event]]:
        """Validate and accept (or risk-reject) one order; raises OrderError for parameter errors."""
        if not isinstance(body, dict):
            raise OrderError(-50, "Invalid input: the order must be a JSON object")
        symbol = body.get("symbol")
        inst = self.market.instrument(symbol) if isinstance(symbol, str) else None
        if inst is None:
            raise OrderError(-300, f"Invalid symbol: {symbol}")
        qty = _int(body.get("qty"))
        if qty is None or qty <= 0 or qty % inst.lot_size:
            raise OrderError(-50, f"Invalid qty: {body.get('qty')!r} (a positive multiple of lot size "
                                  f"{inst.lot_size})")
        side = _int(body.get("side"))
        if side not in (1, -1):
            raise OrderError(-50, f"Invalid side: {body.get('side')!r} (1 buy, -1 sell)")
        otype = _int(body.get("type"))
        if otype not in (LIMIT, MARKET, STOP, STOP_LIMIT):
            raise OrderError(-50, f"Invalid order type: {body.get('type')!r} (1 limit, 2 market, 3 SL-M, 4 SL-L)")
        product = body.get("productType")
        if product not in PRODUCTS:
            if product in ("CO", "BO", "MTF"):
                raise OrderError(-50, f"productType {product} is not supported by the simulator")
            raise OrderError(-50, f"Invalid productType: {product!r}")
        if inst.is_index and not self.tradable_indices:
            raise OrderError(-300, f"Invalid symbol: {symbol} (an index cannot be traded)")
        limit = _float(body.get("limitPrice", 0))
        stop = _float(body.get("stopPrice", 0))
        if limit is None or limit < 0:
            raise OrderError(-50, f"Invalid limitPrice: {body.get('limitPrice')!r}")
        if stop is None or stop < 0:
            raise OrderError(-50, f"Invalid stopPrice: {body.get('stopPrice')!r}")
        if otype in (LIMIT, STOP_LIMIT) and limit <= 0:
            raise OrderError(-50, "Invalid limitPrice: a limit price is required for limit and stop-limit orders")
        if otype in (STOP, STOP_LIMIT) and stop <= 0:
            raise OrderError(-390, "Invalid stopPrice: a stop price is required for stop orders")
        for name, price in (("limitPrice", limit), ("stopPrice", stop)):
            if price and not inst.on_tick(price):
                raise OrderError(-50, f"{name} {price} is not a multiple of tick size {inst.tick_size}")
        ltp = self.ltp(inst.symbol)
        if otype in (STOP, STOP_LIMIT):
            if (side == 1 and stop < ltp) or (side == -1 and stop > ltp):
                raise OrderError(-390, f"Invalid stopPrice {stop}: a buy stop must be at or above the last price "
                                       f"{ltp}, a sell stop at or below it")
            if otype == STOP_LIMIT and ((side == 1 and stop > limit) or (side == -1 and stop < limit)):
                raise OrderError(-390, f"Invalid stopPrice {stop}: for a buy stop-limit it must not be above "
                                       f"limitPrice, for a sell not below it")
        validity = body.get("validity", "DAY") or "DAY"
        if validity not in ("DAY", "IOC"):
            raise OrderError(-50, f"Invalid validity: {validity!r} (DAY or IOC)")
        tag = body.get("orderTag")
        if tag not in (None, ""):
            if not isinstance(tag, str) or not _TAG_RE.match(tag) or tag.lower() == "untagged" or tag == FY_ID:
                raise OrderError(-50, f"Invalid orderTag: {tag!r} (1-30 letters and digits)")
            tag = f"1:{tag}"
        else:
            tag = "2:Untagged"
        disclosed = _int(body.get("disclosedQty", 0)) or 0
        stop_loss, take_profit = _float(body.get("stopLoss", 0) or 0), _float(body.get("takeProfit", 0) or 0)
        leg_type = _int(body.get("legType", 1) or 1)
        if stop_loss is None or stop_loss < 0 or take_profit is None or take_profit < 0:
            raise OrderError(-50, "Invalid stopLoss/takeProfit: give non-negative distances")
        if leg_type not in (1, 2):
            raise OrderError(-50, f"Invalid legType: {body.get('legType')!r} (1 points, 2 percent)")
        order = Order(id=self._next_id(), inst=inst, qty=qty, side=side, type=otype, product=product,
                      limit_price=limit if otype in (LIMIT, STOP_LIMIT) else 0.0,
                      stop_price=stop if otype in (STOP, STOP_LIMIT) else 0.0, validity=validity, tag=tag,
                      placed_ts=self.market.now, placed_tick=self.market.pos, disclosed_qty=disclosed,
                      offline=bool(body.get("offlineOrder", False)), update_ts=self.market.now,
                      stop_loss=stop_loss, take_profit=take_profit, leg_type=leg_type)
        self.orders[order.id] = order
        need = self._extra_margin(order)
        if need > self.available() + 1e-6:
            order.status = REJECTED
            order.message = (f"RMS:Margin Exceeds,Required:{need:.2f}, Available:{self.available():.2f} "
                             f"for order {order.id}")
        else:
            order.message = "Order submitted"
        events: list[Event] = [("orders", order.socket_item())]
        if (self.fill_at_quote and order.type == MARKET and order.status == PENDING and self.market.session_open()
                and not self.market.finished):
            order.fresh = False
            events.extend(self._fill(order, self._fill_price(order, self.ltp(inst.symbol), True), self.market.now))
        self._emit(events)
        return order, events

    def _extra_margin(self, order: Order) -> float:
        """Margin the order would add if filled now (nothing when it reduces a position)."""
        pos = self.positions.get(f"{order.inst.symbol}-{order.product}")
        net = pos.net_qty if pos else 0
        increase = max(0, abs(net + order.side * order.qty) - abs(net))
        price = order.limit_price or order.stop_price or self.ltp(order.inst.symbol)
        value = increase * price
        return value if order.product == "CNC" else value / self.intraday_leverage

    def get(self, order_id: Any) -> Order:
        order = self.orders.get(str(order_id)) if order_id not in (None, "") else None
        if order is None:
            raise OrderError(-51, f"Invalid order id: {order_id}")
        return order

    def modify(self, body: Any) -> tuple[Order, list[Event]]:
        if not isinstance(body, dict):
            raise OrderError(-50, "Invalid input: the modification must be a JSON object")
        order = self.get(body.get("id"))
        if not order.working:
            raise OrderError(-99, f"Order {order.id} is not pending (status {order.status}); it cannot be modified")
        otype = _int(body.get("type", order.type))
        if otype not in (LIMIT, MARKET, STOP, STOP_LIMIT):
            raise OrderError(-50, f"Invalid order type: {body.get('type')!r}")
        qty = _int(body.get("qty", order.qty))
        if qty is None or qty <= 0 or qty % order.inst.lot_size:
            raise OrderError(-50, f"Invalid qty: {body.get('qty')!r}")
        limit = _float(body.get("limitPrice", order.limit_price))
        stop = _float(body.get("stopPrice", order.stop_price))
        if limit is None or stop is None or limit < 0 or stop < 0:
            raise OrderError(-50, "Invalid limitPrice or stopPrice")
        if otype in (LIMIT, STOP_LIMIT) and limit <= 0:
            raise OrderError(-50, "Invalid limitPrice: a limit price is required for limit and stop-limit orders")
        if otype in (STOP, STOP_LIMIT) and stop <= 0:
            raise OrderError(-390, "Invalid stopPrice: a stop price is required for stop orders")
        for name, price in (("limitPrice", limit), ("stopPrice", stop)):
            if price and not order.inst.on_tick(price):
                raise OrderError(-50, f"{name} {price} is not a multiple of tick size {order.inst.tick_size}")
        order.type, order.qty = otype, qty
        order.limit_price = limit if otype in (LIMIT, STOP_LIMIT) else 0.0
        order.stop_price = stop if otype in (STOP, STOP_LIMIT) else 0.0
        order.triggered, order.fresh = False, True
        order.placed_tick = self.market.pos  # re-evaluated from the next tick, price improvement included
        order.update_ts = self.market.now
        order.message = "Order modified"
        events: list[Event] = [("orders", order.socket_item())]
        self._emit(events)
        return order, events

    def cancel(self, body: Any) -> tuple[Order, list[Event]]:
        order = self.get(body.get("id") if isinstance(body, dict) else None)
        if not order.working:
            raise OrderError(-99, f"Order {order.id} is not pending (status {order.status}); it cannot be cancelled")
        order.status, order.message, order.update_ts = CANCELLED, "Cancelled by user", self.market.now
        events: list[Event] = [("orders", order.socket_item())]
        self._emit(events)
        return order, events

    def exit_positions(self, body: Any) -> list[Order]:
        """Market orders that flatten the selected positions (all when ``exit_all``)."""
        body = body if isinstance(body, dict) else {}
        ids = body.get("id")
        if isinstance(ids, str):
            ids = [ids]
        chosen = [p for p in self.positions.values() if p.net_qty and (not ids or p.id in ids)]
        if body.get("pending_orders_cancel"):
            for order in list(self.orders.values()):
                if order.working and (not ids or f"{order.inst.symbol}-{order.product}" in ids):
                    self.cancel({"id": order.id})
        if not chosen:
            raise OrderError(-352, "No position to exit")
        placed = []
        for p in chosen:
            order, _ = self.place({"symbol": p.inst.symbol, "qty": abs(p.net_qty), "side": -1 if p.net_qty > 0 else 1,
                                   "type": MARKET, "productType": p.product, "orderTag": "exitposition"})
            placed.append(order)
        return placed

    # ------------------------------------------------------------------ matching

    def on_tick(self, tick: SimTick) -> list[Event]:
        events: list[Event] = self._trigger_legs(tick)
        for order in list(self.orders.values()):
            if not order.working or order.inst.symbol != tick.symbol or order.placed_tick >= self.market.pos:
                continue
            first, order.fresh = order.fresh, False
            price = self._fill_price(order, tick.price, first)
            if price is not None:
                events.extend(self._fill(order, price, tick.ts))
            elif order.validity == "IOC":
                order.status, order.message, order.update_ts = CANCELLED, "IOC order cancelled", tick.ts
                events.append(("orders", order.socket_item()))
        self._emit(events)
        return events

    def _trigger_legs(self, tick: SimTick) -> list[Event]:
        """The TP/SL overlay of open positions: a print at or through the stop or the target closes the
        position at that print with a system order (tag ``2:Untagged``, ``parentId`` the entry)."""
        events: list[Event] = []
        for pos in list(self.positions.values()):
            if pos.legs is None or pos.inst.symbol != tick.symbol or pos.net_qty == 0:
                continue
            stop, target, parent = pos.legs
            long = pos.net_qty > 0
            hit = (tick.price <= stop if long else tick.price >= stop) if stop > 0 else False
            hit = hit or ((tick.price >= target if long else tick.price <= target) if target > 0 else False)
            if not hit:
                continue
            leg = Order(id=self._next_id(), inst=pos.inst, qty=abs(pos.net_qty), side=-1 if long else 1, type=MARKET,
                        product=pos.product, limit_price=0.0, stop_price=0.0, validity="DAY", tag="2:Untagged",
                        placed_ts=tick.ts, placed_tick=self.market.pos, update_ts=tick.ts, parent_id=parent,
                        message="TP/SL leg triggered")
            self.orders[leg.id] = leg
            events.extend(self._fill(leg, tick.price, tick.ts))
        return events

    def _fill_price(self, order: Order, price: float, first: bool) -> float | None:
        side = order.side
        if order.type in (STOP, STOP_LIMIT) and not order.triggered:
            if (side == 1 and price >= order.stop_price) or (side == -1 and price <= order.stop_price):
                order.triggered = True
                first = True  # a triggered stop becomes a fresh market/limit order at this tick
            else:
                return None
        if order.type in (MARKET, STOP):
            slip = price * self.slippage_bps / 10_000 * side
            return order.inst.round_price(price + slip)
        limit = order.limit_price
        if (side == 1 and price <= limit) or (side == -1 and price >= limit):
            return price if first else limit
        return None

    def _fill(self, order: Order, price: float, ts: int) -> list[Event]:
        order.status, order.filled_qty, order.traded_price = TRADED, order.qty, price
        order.update_ts, order.message = ts, "TRADE CONFIRMED"
        trade = Trade(number=f"{order.id}{len(self.trades) + 1:06d}", order=order, qty=order.qty, price=price, ts=ts)
        self.trades.append(trade)
        key = f"{order.inst.symbol}-{order.product}"
        pos = self.positions.get(key)
        if pos is None:
            pos = self.positions[key] = Position(inst=order.inst, product=order.product)
        before = pos.net_qty
        pos.apply(order.side, order.qty, price)
        if pos.net_qty == 0 or (before != 0 and (pos.net_qty > 0) != (before > 0)):
            pos.legs = None  # closed or flipped: the overlay goes with the position it protected
        if before == 0 or (pos.net_qty != 0 and (pos.net_qty > 0) != (before > 0)):
            if order.stop_loss > 0 or order.take_profit > 0:
                def level(dist: float, sign: int) -> float:
                    if dist <= 0:
                        return 0.0
                    move = dist if order.leg_type == 1 else price * dist / 100.0
                    return order.inst.round_price(price + sign * move)
                pos.legs = (level(order.stop_loss, -order.side), level(order.take_profit, order.side), order.id)
        ltp = self.ltp(order.inst.symbol)
        return [("orders", order.socket_item()), ("trades", trade.socket_item()),
                ("positions", pos.socket_item(ltp))]

    # ------------------------------------------------------------------ reports

    def orderbook(self, order_id: str | None = None, tag: str | None = None,
                  lag_s: float = 0.0) -> list[dict[str, Any]]:
        """The orderbook; ``lag_s``: orders placed less than that many seconds ago are not in it yet."""
        items = []
        seen_before = time.monotonic() - lag_s
        for order in self.orders.values():
            if lag_s and order.placed_wall > seen_before:
                continue
            if order_id and order.id not in str(order_id).split(","):
                continue
            if tag and order.tag not in (tag, f"1:{tag}"):
                continue
            items.append(order.book_item(self.ltp(order.inst.symbol)))
        return items

    def tradebook(self, tag: str | None = None, lag_s: float = 0.0) -> list[dict[str, Any]]:
        seen_before = time.monotonic() - lag_s
        return [t.book_item() for t in self.trades if (not tag or t.order.tag in (tag, f"1:{tag}"))
                and not (lag_s and t.wall > seen_before)]

    def position_book(self) -> dict[str, Any]:
        items = [p.book_item(self.ltp(p.inst.symbol)) for p in self.positions.values()]
        realized = round(self.realized(), 2)
        unreal = round(self.unrealized(), 2)
        return {"netPositions": items,
                "overall": {"count_total": len(items), "count_open": sum(1 for i in items if i["netQty"]),
                            "pl_total": round(realized + unreal, 2), "pl_realized": realized,
                            "pl_unrealized": unreal}}

    def funds(self) -> list[dict[str, Any]]:
        realized, used = self.realized(), self.margin_used()
        total = self.initial_funds + realized
        rows = [(1, "Total Balance", total), (2, "Utilized Amount", used), (3, "Clear Balance", total),
                (4, "Realized Profit and Loss", realized), (5, "Collaterals", 0.0), (6, "Fund Transfer", 0.0),
                (7, "Receivables", 0.0), (8, "Adhoc Limit", 0.0),
                (9, "Limit at start of the day", self.initial_funds), (10, "Available Balance", total - used)]
        return [{"id": i, "title": title, "equityAmount": round(v, 2), "commodityAmount": 0.0}
                for i, title, v in rows]

    def holdings(self) -> dict[str, Any]:
        items = []
        for p in self.positions.values():
            if p.product != "CNC" or p.net_qty <= 0:
                continue
            ltp = self.ltp(p.inst.symbol)
            items.append({"symbol": p.inst.symbol, "holdingType": "T1", "quantity": p.net_qty,
                          "remainingQuantity": p.net_qty, "pl": round(p.unrealized(ltp), 2),
                          "costPrice": round(p.avg, 2), "marketVal": round(p.net_qty * ltp, 2), "ltp": ltp,
                          "id": 0, "fyToken": p.inst.fytoken, "exchange": p.inst.exchange,
                          "segment": p.inst.segment, "isin": "", "qty_t1": p.net_qty, "remainingPledgeQuantity": 0,
                          "collateralQuantity": 0})
        invest = sum(i["costPrice"] * i["quantity"] for i in items)
        value = sum(i["marketVal"] for i in items)
        return {"holdings": items,
                "overall": {"count_total": len(items), "total_investment": round(invest, 2),
                            "total_current_value": round(value, 2), "total_pl": round(value - invest, 2),
                            "pnl_perc": round((value - invest) / invest * 100, 2) if invest else 0.0}}

    def reset(self) -> None:
        self.orders.clear()
        self.trades.clear()
        self.positions.clear()


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
