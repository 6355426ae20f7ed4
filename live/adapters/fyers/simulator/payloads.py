"""Market-data payloads built from a symbol's running quote: REST quotes/depth and the data socket's fields.

The simulator keeps no order book: bid/ask are one tick either side of the last price, and the depth's
five levels step one tick further each, with made-up sizes (100, 200, ... lots; 1..5 orders). Indices
have no bid/ask (zeros) and no depth.
"""

from __future__ import annotations

from typing import Any

from tradebot.live.adapters.fyers.simulator.market import Quote
from tradebot.live.adapters.fyers.simulator.symbols import Instrument

PRECISION = 2
SCALE = 10 ** PRECISION  # multiplier 1, precision 2: raw 82015 is 820.15


def raw(price: float) -> int:
    return int(round(price * SCALE))


Level = tuple[float, int, int]  # price, size, orders


def book(q: Quote, inst: Instrument, levels: int = 5) -> tuple[list[Level], list[Level]]:
    """(bids, asks) as (price, size, orders) per level."""
    if inst.is_index:
        return [], []
    t = inst.tick_size
    bids = [(round(q.ltp - t * i, 2), 100 * i * inst.lot_size, i) for i in range(1, levels + 1)]
    asks = [(round(q.ltp + t * i, 2), 100 * i * inst.lot_size, i) for i in range(1, levels + 1)]
    return bids, asks


def circuit(q: Quote) -> tuple[float, float]:
    return round(q.prev_close * 0.8, 2), round(q.prev_close * 1.2, 2)


def hsm_values(kind: str, q: Quote, inst: Instrument, now: int) -> list[int]:
    """The positional field values of an ``sf`` / ``if`` / ``dp`` topic (doc section 4.1 field order)."""
    if kind == "if":
        return [raw(q.ltp), raw(q.prev_close), now, raw(q.high), raw(q.low), raw(q.open)]
    bids, asks = book(q, inst)
    if kind == "dp":
        return ([raw(p) for p, _, _ in bids] + [raw(p) for p, _, _ in asks] + [s for _, s, _ in bids]
                + [s for _, s, _ in asks] + [o for _, _, o in bids] + [o for _, _, o in asks])
    lower, upper = circuit(q)
    return [raw(q.ltp), q.volume, q.ltt, now, bids[0][1], asks[0][1], raw(bids[0][0]), raw(asks[0][0]), q.ltq,
            sum(s for _, s, _ in bids), sum(s for _, s, _ in asks), raw(q.atp), 0, raw(q.low), raw(q.high),
            raw(q.year_high), raw(q.year_low), raw(lower), raw(upper), raw(q.open), raw(q.prev_close)]


def quote_item(q: Quote, inst: Instrument) -> dict[str, Any]:
    bids, asks = book(q, inst, 1)
    bid = bids[0][0] if bids else 0.0
    ask = asks[0][0] if asks else 0.0
    return {"n": inst.symbol, "s": "ok", "v": {
        "ch": round(q.change, 2), "chp": round(q.change_pct, 2), "lp": q.ltp,
        "spread": round(ask - bid, 2) if bids else 0.0, "ask": ask, "bid": bid, "open_price": q.open,
        "high_price": q.high, "low_price": q.low, "prev_close_price": q.prev_close, "atp": round(q.atp, 2),
        "volume": q.volume, "short_name": inst.name, "exchange": "NSE" if inst.exchange == 10 else "BSE",
        "description": inst.symbol, "original_name": inst.symbol, "symbol": inst.symbol, "fyToken": inst.fytoken,
        "tt": str(q.ltt)}}


def depth_item(q: Quote, inst: Instrument) -> dict[str, Any]:
    bids, asks = book(q, inst)
    lower, upper = circuit(q)
    return {"totalbuyqty": sum(s for _, s, _ in bids), "totalsellqty": sum(s for _, s, _ in asks),
            "bids": [{"price": p, "volume": s, "ord": o} for p, s, o in bids],
            "ask": [{"price": p, "volume": s, "ord": o} for p, s, o in asks],
            "o": q.open, "h": q.high, "l": q.low, "c": q.prev_close, "chp": round(q.change_pct, 2),
            "tick_Size": inst.tick_size, "ch": round(q.change, 2), "ltq": q.ltq, "ltt": q.ltt, "ltp": q.ltp,
            "v": q.volume, "atp": round(q.atp, 2), "lower_ckt": lower, "upper_ckt": upper, "expiry": "",
            "oi": 0, "oiflag": False, "pdoi": 0, "oipercent": 0.0}
