"""Test doubles for the adapter: a scripted stand-in for ``FyersModel`` and fake sockets.

``FakeFyersModel`` answers each SDK method from a script (a list of ``(response, HttpInfo)`` consumed
in order; the last one repeats) or from a default success payload, and records every call. Pass
``http_info=model.http`` to ``FyersRest`` so the translation sees the scripted HTTP status / timeout.
The response dicts are recorded Fyers payloads (shapes from the API docs, §2/§6/§7).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Sequence
from typing import Any

from tradebot.live.adapters.fyers.error_translation import HttpInfo

OK = HttpInfo(status=200)

# recorded payloads (trimmed to the keys the adapter reads)
PROFILE_OK = {"s": "ok", "code": 200, "message": "", "data": {"fy_id": "XS00001", "name": "TEST USER"}}
FUNDS_OK = {"s": "ok", "code": 200, "message": "", "fund_limit": [
    {"id": 1, "title": "Total Balance", "equityAmount": 100000.0, "commodityAmount": 0},
    {"id": 10, "title": "Available Balance", "equityAmount": 95000.0, "commodityAmount": 0}]}
ORDERBOOK_EMPTY = {"s": "ok", "code": 200, "message": "", "orderBook": []}
TRADEBOOK_EMPTY = {"s": "ok", "code": 200, "message": "", "tradeBook": []}
POSITIONS_EMPTY = {"s": "ok", "code": 200, "message": "", "netPositions": [], "overall": {}}
PLACE_OK = {"s": "ok", "code": 1101, "message": "Order submitted successfully. Your Order Ref. No.23080400000001",
            "id": "23080400000001"}
CANCEL_OK = {"s": "ok", "code": 1103, "message": "Successfully cancelled order", "id": "23080400000001"}
MODIFY_OK = {"s": "ok", "code": 1102, "message": "Successfully modified order", "id": "23080400000001"}
HISTORY_OK = {"s": "ok", "code": 200, "message": "", "candles": []}

TOKEN_EXPIRED = ({"s": "error", "code": -8, "message": "Your token has expired. Please generate a token"},
                 HttpInfo(status=401))
TOKEN_INVALID = ({"s": "error", "code": -16, "message": "Could not authenticate the user"}, HttpInfo(status=401))
RATE_LIMITED = ({"s": "error", "code": -429, "message": "request limit reached"},
                HttpInfo(status=429, headers={"Retry-After": "2"}))
BAD_GATEWAY = ({"s": "error", "code": 502, "message": "Bad request"}, HttpInfo(status=502))  # non-JSON 502 page
NETWORK = ({"s": "error", "code": -99, "message": "Bad request"}, HttpInfo(error="connection"))
TIMEOUT = ({"s": "error", "code": -99, "message": "Bad request"}, HttpInfo(error="timeout"))
REJECTED_TICK = ({"s": "error", "code": -50, "message": "Invalid parameters: limitPrice not a multiple of tick size"},
                 HttpInfo(status=400))
REJECTED_RMS = ({"s": "error", "code": -99, "message": "RMS:Margin Exceeds"}, HttpInfo(status=400))

DEFAULTS: dict[str, dict[str, Any]] = {
    "get_profile": PROFILE_OK, "funds": FUNDS_OK, "orderbook": ORDERBOOK_EMPTY, "tradebook": TRADEBOOK_EMPTY,
    "positions": POSITIONS_EMPTY, "place_order": PLACE_OK, "cancel_order": CANCEL_OK, "modify_order": MODIFY_OK,
    "history": HISTORY_OK,
}


def order_item(tag: str, *, status: int = 6, id: str = "23080400000001", symbol: str = "NSE:SBIN-EQ", side: int = 1,
               qty: int = 10, filled: int = 0, price: float = 0.0, message: str = "") -> dict[str, Any]:
    """An orderbook / order-socket item (the SDK's renamed keys)."""
    return {"id": id, "orderTag": f"1:{tag}", "symbol": symbol, "side": side, "qty": qty, "filledQty": filled,
            "remainingQuantity": qty - filled, "tradedPrice": price, "status": status, "type": 2,
            "productType": "INTRADAY", "message": message, "orderDateTime": "04-Aug-2023 09:20:05"}


def trade_item(tag: str, *, trade_no: str = "T1", order_id: str = "23080400000001", symbol: str = "NSE:SBIN-EQ",
               side: int = 1, qty: int = 10, price: float = 600.0, time: str = "04-Aug-2023 09:20:06") -> dict[str, Any]:
    return {"tradeNumber": trade_no, "orderNumber": order_id, "symbol": symbol, "side": side, "tradedQty": qty,
            "tradePrice": price, "orderDateTime": time, "orderTag": f"1:{tag}", "productType": "INTRADAY"}


class FakeFyersModel:
    """Scripted SDK model; ``script(name, *answers)`` queues ``(response, HttpInfo)`` answers for one method."""

    def __init__(self) -> None:
        self._script: dict[str, list[tuple[Any, HttpInfo]]] = {}
        self.calls: list[tuple[str, Any]] = []
        self._http = threading.local()
        self.handlers: dict[str, Callable[[Any], tuple[Any, HttpInfo]]] = {}

    def script(self, name: str, *answers: tuple[Any, HttpInfo] | dict) -> "FakeFyersModel":
        self._script[name] = [a if isinstance(a, tuple) else (a, OK) for a in answers]
        return self

    def http(self) -> HttpInfo | None:
        return getattr(self._http, "info", None)

    def count(self, name: str) -> int:
        return sum(1 for n, _ in self.calls if n == name)

    def _answer(self, name: str, payload: Any) -> Any:
        self.calls.append((name, copy.deepcopy(payload)))
        if name in self.handlers:
            resp, info = self.handlers[name](payload)
        else:
            queue = self._script.get(name)
            if queue:
                resp, info = queue.pop(0) if len(queue) > 1 else queue[0]
            else:
                resp, info = DEFAULTS.get(name, {"s": "ok", "code": 200, "message": ""}), OK
        self._http.info = info
        return resp  # like the SDK: possibly a shared dict the caller must copy

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda data=None: self._answer(name, data)


class FakeOrderSocket:
    """Stands in for ``sockets.OrderSocket``; ``push_order/push_trade/push_position`` play the server."""

    def __init__(self, *, on_order: Callable[[dict], None], on_trade: Callable[[dict], None],
                 on_position: Callable[[dict], None], subscribe: bool = True):
        self.on_order, self.on_trade, self.on_position = on_order, on_trade, on_position
        self.subscribed = threading.Event()
        self._subscribe = subscribe
        self.started = self.stopped = 0

    def start(self) -> None:
        self.started += 1
        if self._subscribe:
            self.subscribed.set()

    def stop(self, wait: bool = True) -> None:
        self.stopped += 1
        self.subscribed.clear()

    def push_order(self, item: dict) -> None:
        self.on_order(item)

    def push_trade(self, item: dict) -> None:
        self.on_trade(item)

    def push_position(self, item: dict) -> None:
        self.on_position(item)


class FakeDataSocket:
    """Stands in for ``sockets.DataSocket``; ``send(msg)`` plays a data message."""

    instances: list["FakeDataSocket"] = []

    def __init__(self, symbols: Sequence[str], *, on_tick: Callable[[dict], None], on_error: Any = None,
                 on_connected: Any = None):
        self.symbols = list(symbols)
        self.on_tick = on_tick
        self.started = self.stopped = 0
        FakeDataSocket.instances.append(self)

    def start(self) -> None:
        self.started += 1

    def stop(self, wait: bool = True) -> None:
        self.stopped += 1

    def send(self, msg: dict) -> None:
        self.on_tick(msg)
