"""The simulator's market-data REST routes (``/data``: history, quotes, depth, market status, symbol
tokens, the index mapping), a mixin of ``SimServer``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from tradebot.live.adapters.fyers.simulator.market import IST, HistoryError, Market
from tradebot.live.adapters.fyers.simulator.payloads import depth_item, quote_item
from tradebot.live.adapters.fyers.simulator.symbols import Instrument

MINUTE_RESOLUTIONS = {"1", "2", "3", "5", "10", "15", "20", "30", "45", "60", "120", "180", "240"}
SECOND_RESOLUTIONS = {"5S", "10S", "15S", "30S", "45S"}
DAY_RESOLUTIONS = {"D", "1D", "1W", "1M"}


def ok(**payload: Any) -> web.Response:
    return web.json_response({"s": "ok", "code": 200, "message": "", **payload})


def error(code: int, message: str, status: int = 400, **extra: Any) -> web.Response:
    return web.json_response({"s": "error", "code": code, "message": message, **extra}, status=status)


class DataRoutes:
    """``/data`` handlers; the server provides ``market`` and ``_auth``."""

    market: Market

    def _auth(self, request: web.Request, bare_ok: bool = False) -> web.Response | None:
        raise NotImplementedError

    @staticmethod
    async def _json(request: web.Request) -> Any:
        raise NotImplementedError


    def _symbol(self, symbol: str | None) -> Instrument | None:
        return self.market.instrument(symbol) if symbol else None

    async def history(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        q = request.query
        inst = self._symbol(q.get("symbol"))
        if inst is None:
            return error(-300, f"Invalid symbol: {q.get('symbol')}")
        res = (q.get("resolution") or "").upper()
        if res not in MINUTE_RESOLUTIONS | SECOND_RESOLUTIONS | DAY_RESOLUTIONS:
            return error(-50, f"Invalid resolution: {q.get('resolution')}")
        try:
            lo, hi = _range(q.get("date_format", "0"), q.get("range_from"), q.get("range_to"))
        except ValueError as err:
            return error(-50, f"Invalid input: {err}")
        limit = 366 if res in DAY_RESOLUTIONS else 100
        span_days = (hi - lo) // 86_400
        if span_days > limit:
            return error(-50, f"Invalid input: range_from to range_to spans {span_days:.0f} days; resolution {res} "
                              f"allows at most {limit} days per request")
        try:
            candles = self.market.history(inst.symbol, res, lo, hi, oi_flag=q.get("oi_flag") == "1")
        except HistoryError as err:
            return error(err.code, str(err))
        if not candles:
            return web.json_response({"s": "no_data", "code": 200, "message": "", "candles": []})
        return ok(candles=candles)

    async def quotes(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        if request.method == "POST":
            body = await self._json(request)
            raw = body.get("symbols") if isinstance(body, dict) else body
            symbols = raw if isinstance(raw, list) else str(raw or "").split(",")
        else:
            symbols = (request.query.get("symbols") or "").split(",")
        symbols = [s.strip() for s in symbols if s and s.strip()]
        if not symbols:
            return error(-50, "Please provide symbols")
        if len(symbols) > 50:
            return error(-50, "Invalid input: at most 50 symbols per request")
        items = []
        for symbol in symbols:
            inst = self._symbol(symbol)
            if inst is None:
                items.append({"n": symbol, "s": "error", "v": {"s": "error", "code": -300,
                                                                  "errmsg": "invalid symbol"}})
            else:
                items.append(quote_item(self.market.quotes[inst.symbol], inst))
        if all(i["s"] == "error" for i in items):
            return error(-300, "Please provide a valid symbol", d=items)
        return ok(d=items)

    async def depth(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        inst = self._symbol(request.query.get("symbol"))
        if inst is None:
            return error(-300, f"Invalid symbol: {request.query.get('symbol')}")
        if inst.is_index:
            return error(-300, "Index does not have market depth")
        return ok(d={inst.symbol: depth_item(self.market.quotes[inst.symbol], inst)})

    async def market_status(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        status = "OPEN" if self.market.session_open() else "CLOSED"
        rows = [{"exchange": ex, "segment": seg, "market_type": "NORMAL", "status": status}
                for ex, seg in ((10, 10), (10, 11), (12, 10), (12, 11))]
        return ok(marketStatus=rows)

    async def symbol_token(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request, bare_ok=True)) is not None:
            return denied
        body = await self._json(request)
        symbols = body.get("symbols") if isinstance(body, dict) else None
        if not isinstance(symbols, list):
            return error(-50, "Please provide symbols")
        valid, invalid = {}, []
        for symbol in symbols:
            inst = self._symbol(symbol) if isinstance(symbol, str) else None
            if inst is None:
                invalid.append(symbol)
            else:
                valid[symbol] = inst.fytoken
        return web.json_response({"s": "ok", "code": 200, "message": "", "validSymbol": valid,
                                  "invalidSymbol": invalid})

    async def index_mapping(self, request: web.Request) -> web.Response:
        return web.json_response({i.symbol: i.hsm_index_name for i in self.market.instruments() if i.is_index})


def _range(date_format: str, range_from: str | None, range_to: str | None) -> tuple[int, int]:
    """(from, to) epoch seconds, both inclusive; a date (date_format 1) covers its whole IST day."""
    if not range_from or not range_to:
        raise ValueError("range_from and range_to are required")
    if str(date_format) == "1":
        try:
            lo = dt.datetime.strptime(range_from, "%Y-%m-%d").replace(tzinfo=IST)
            hi = dt.datetime.strptime(range_to, "%Y-%m-%d").replace(tzinfo=IST)
        except ValueError:
            raise ValueError("with date_format 1, range_from and range_to are yyyy-mm-dd") from None
        lo_ts, hi_ts = int(lo.timestamp()), int(hi.timestamp()) + 86_399
    elif str(date_format) == "0":
        try:
            lo_ts, hi_ts = int(float(range_from)), int(float(range_to))
        except ValueError:
            raise ValueError("with date_format 0, range_from and range_to are epoch seconds") from None
    else:
        raise ValueError("date_format is 0 (epoch) or 1 (yyyy-mm-dd)")
    if lo_ts > hi_ts:
        raise ValueError("range_from is after range_to")
    return lo_ts, hi_ts

