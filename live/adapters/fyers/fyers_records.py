"""Fyers order, trade and position records as the execution client keeps them: status and tag mapping,
Fyers' time formats, and the per-order / per-symbol records (``OrderRecord``, ``PositionBook``)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd

from tradebot.live.ports import Intent, OrderRequest, OrderStatus, OrderUpdate, Side

STATUS_MAP = {1: OrderStatus.CANCELED, 2: OrderStatus.FILLED, 3: OrderStatus.ACCEPTED, 4: OrderStatus.ACCEPTED,
              5: OrderStatus.REJECTED, 6: OrderStatus.ACCEPTED, 7: OrderStatus.EXPIRED}
ORDER_TYPES = {"LIMIT": 1, "MARKET": 2, "STOP": 3, "SL-M": 3, "STOP_LIMIT": 4, "SL-L": 4}
PRODUCTS = {"equity_intraday": "INTRADAY", "intraday": "INTRADAY", "equity_delivery": "CNC", "delivery": "CNC",
            "index_futures": "MARGIN", "futures": "MARGIN", "margin": "MARGIN"}
TAG_RE = re.compile(r"^[A-Za-z0-9]{1,30}$")
EXIT_KIND = {Intent.EXIT: "signal", Intent.FLATTEN: "square_off"}


@dataclass(frozen=True, slots=True)
class FyersOrder(OrderRequest):
    """An ``OrderRequest`` with the prices of a limit / stop order (``order_type`` LIMIT, STOP, STOP_LIMIT)."""

    limit_price: float = math.nan
    stop_price: float = math.nan
    validity: str = "DAY"


def fyers_status(code: Any) -> OrderStatus:
    try:
        return STATUS_MAP[int(code)]
    except (KeyError, TypeError, ValueError):
        return OrderStatus.ACCEPTED


def tag_of(raw: Any) -> str:
    """``"1:TB..."`` -> ``"TB..."``; Fyers' own tags (``2:Untagged``) -> ""."""
    s = str(raw or "")
    if ":" in s:
        prefix, s = s.split(":", 1)
        if prefix == "2":
            return ""
    return "" if s in ("", "Untagged") else s


def parse_time_ns(value: Any, default: int) -> int:
    """Fyers times: epoch seconds (int/str) or ``09-Mar-2023 09:34:38`` (IST)."""
    if value is None or value == "":
        return default
    try:
        v = float(value)
        return int(v * 1e9) if v < 1e11 else int(v * 1e6) if v < 1e14 else int(v)
    except (TypeError, ValueError):
        pass
    for fmt in ("%d-%b-%Y %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%d/%m/%Y %H:%M:%S"):
        try:
            ts = pd.Timestamp(datetime.strptime(str(value), fmt)).tz_localize("Asia/Kolkata")
            return int(ts.value)
        except ValueError:
            continue
    return default


def num(d: Mapping[str, Any], *keys: str, default: float = 0.0) -> float:
    for k in keys:
        v = d.get(k)
        if v is not None and v != "":
            try:
                return float(v)
            except (TypeError, ValueError):
                continue
    return default


def round_tick(price: float, tick: float) -> float:
    return round(round(price / tick) * tick, 4)


@dataclass
class OrderRecord:
    client_order_id: str
    symbol: str
    status: OrderStatus
    ts: int
    side: Side | None = None
    qty: float = 0.0
    filled_qty: float = 0.0
    avg_price: float = math.nan
    reason: str = ""
    broker_id: str | None = None
    request: OrderRequest | None = None

    def update(self) -> OrderUpdate:
        return OrderUpdate(client_order_id=self.client_order_id, symbol=self.symbol, status=self.status, ts=self.ts,
                           filled_qty=self.filled_qty, avg_price=self.avg_price, reason=self.reason,
                           broker_order_id=self.broker_id)


@dataclass
class PositionBook:
    """A symbol's position as our fills built it (ids, stops; the socket's netQty is the truth for size)."""

    qty: float = 0.0
    avg: float = math.nan
    position_id: str = ""
    opened_ts: int = 0
    stop: float = math.nan
    take_profit: float = math.nan
    entry_costs: float = 0.0  # the (estimated) costs of the open quantity's entry fills


__all__ = ["EXIT_KIND", "FyersOrder", "ORDER_TYPES", "OrderRecord", "PRODUCTS", "PositionBook", "STATUS_MAP",
           "TAG_RE", "fyers_status", "num", "parse_time_ns", "round_tick", "tag_of"]
