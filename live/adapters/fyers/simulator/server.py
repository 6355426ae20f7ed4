"""The aiohttp application: REST v3, data REST, the HSM data socket, the order socket and ``/_sim`` controls.

All state (market, broker, auth, connections) lives on the server's event loop; ``FyersSimulator`` calls
in from other threads with ``run_coroutine_threadsafe``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import math
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from tradebot.live.adapters.fyers.simulator import hsm
from tradebot.live.adapters.fyers.simulator.tokens import FY_ID, Auth, AuthError
from tradebot.live.adapters.fyers.simulator.faults import Faults, HttpFault
from tradebot.live.adapters.fyers.simulator.market import IST, HistoryError, Market, SimTick
from tradebot.live.adapters.fyers.simulator.broker import REJECTED, Broker, Event, OrderError
from tradebot.live.adapters.fyers.simulator.payloads import depth_item, hsm_values, quote_item
from tradebot.live.adapters.fyers.simulator.symbols import Instrument, normalise_name

log = logging.getLogger(__name__)

API, DATA = "/api/v3", "/data"
HSM_PATH, ORDER_WS_PATH = "/hsm/v1-5/prod", "/trade/v3"
INDEX_MAPPING_PATH = "/sym_details/index_hsm_mapping.json"
MINUTE_RESOLUTIONS = {"1", "2", "3", "5", "10", "15", "20", "30", "45", "60", "120", "180", "240"}
SECOND_RESOLUTIONS = {"5S", "10S", "15S", "30S", "45S"}
DAY_RESOLUTIONS = {"D", "1D", "1W", "1M"}
ORDER_ROUTES = ("/orders/sync", "/multi-order/sync")


def ok(**payload: Any) -> web.Response:
    return web.json_response({"s": "ok", "code": 200, "message": "", **payload})


def error(code: int, message: str, status: int = 400, **extra: Any) -> web.Response:
    return web.json_response({"s": "error", "code": code, "message": message, **extra}, status=status)


@dataclass(eq=False)
class DataConn:
    ws: web.WebSocketResponse
    authed: bool = False
    lite: bool = False
    topics: dict[str, tuple[int, str, Instrument, int]] = field(default_factory=dict)  # name -> id, kind, inst, ch
    paused: set[int] = field(default_factory=set)
    next_id: int = 1
    msg_no: int = 0


@dataclass(eq=False)
class OrderConn:
    ws: web.WebSocketResponse
    lists: set[str] = field(default_factory=set)


class SimServer:
    def __init__(self, market: Market, broker: Broker, auth: Auth, faults: Faults,
                 enforce_rate_limits: bool = False):
        self.market, self.broker, self.auth, self.faults = market, broker, auth, faults
        self.enforce_rate_limits = enforce_rate_limits
        self.data_conns: set[DataConn] = set()
        self.order_conns: set[OrderConn] = set()
        self.pending: list[Event] = []
        self.broker.listeners.append(self.pending.extend)
        self._req_times: deque[float] = deque()
        self._order_times: deque[float] = deque()
        self._index_lookup = self._build_index_lookup()
        self.app = self._build_app()

    def _build_index_lookup(self) -> dict[str, tuple[Instrument, str]]:
        lookup: dict[str, tuple[Instrument, str]] = {}
        for topic, (inst, kind) in self.market.by_topic().items():
            lookup[topic] = (inst, kind)
            if kind == "if":
                for name in (inst.name, inst.hsm_index_name):
                    lookup[f"if|{inst.hsm_segment}|{normalise_name(name)}"] = (inst, kind)
        return lookup

    def resolve_topic(self, topic: str) -> tuple[Instrument, str] | None:
        hit = self._index_lookup.get(topic)
        if hit is None and topic.startswith("if|"):
            _, seg, name = (topic.split("|", 2) + ["", ""])[:3]
            hit = self._index_lookup.get(f"if|{seg}|{normalise_name(name)}")
        return hit

    # ------------------------------------------------------------------ app

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        r = app.router
        r.add_get(f"{API}/generate-authcode", self.generate_authcode)
        r.add_post(f"{API}/validate-authcode", self.validate_authcode)
        r.add_get(f"{API}/profile", self.profile)
        r.add_get(f"{API}/funds", self.funds)
        r.add_get(f"{API}/holdings", self.holdings)
        r.add_get(f"{API}/positions", self.positions)
        r.add_delete(f"{API}/positions", self.exit_positions)
        r.add_get(f"{API}/tradebook", self.tradebook)
        r.add_get(f"{API}/orders", self.orderbook)
        r.add_post(f"{API}/orders/sync", self.place_order)
        r.add_patch(f"{API}/orders/sync", self.modify_order)
        r.add_delete(f"{API}/orders/sync", self.cancel_order)
        r.add_delete(f"{API}/orders/{{order_id}}/sync", self.cancel_order)
        r.add_post(f"{API}/multi-order/sync", self.multi_order)
        r.add_patch(f"{API}/multi-order/sync", self.multi_order)
        r.add_delete(f"{API}/multi-order/sync", self.multi_order)
        r.add_post(f"{API}/logout", self.logout)
        r.add_get(f"{DATA}/history", self.history)
        r.add_get(f"{DATA}/quotes", self.quotes)
        r.add_post(f"{DATA}/quotes", self.quotes)
        r.add_get(f"{DATA}/depth", self.depth)
        r.add_get(f"{DATA}/marketStatus", self.market_status)
        r.add_post(f"{DATA}/symbol-token", self.symbol_token)
        r.add_get(INDEX_MAPPING_PATH, self.index_mapping)
        r.add_get(HSM_PATH, self.hsm_socket)
        r.add_get(ORDER_WS_PATH, self.order_socket)
        r.add_get("/_sim/state", self.sim_state)
        r.add_post("/_sim/faults", self.sim_faults)
        r.add_delete("/_sim/faults", self.sim_clear_faults)
        r.add_post("/_sim/advance", self.sim_advance)
        r.add_post("/_sim/reset", self.sim_reset)
        r.add_post("/_sim/login", self.sim_login)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler) -> web.StreamResponse:
        path = request.path
        if path.startswith("/_sim/"):
            return await handler(request)
        delay, fault = self.faults.take(request.method, path)
        if delay:
            await asyncio.sleep(delay)
        if fault is not None:
            return self._fault_response(fault)
        if self.enforce_rate_limits and not path.startswith(("/hsm/", "/trade/")):
            limited = self._rate_limited(request)
            if limited is not None:
                return limited
        try:
            return await handler(request)
        finally:
            await self.flush()

    def _fault_response(self, fault: HttpFault) -> web.Response:
        if fault.kind == "rate_limit":
            headers = {"Retry-After": str(max(1, math.ceil(fault.retry_after))),
                       "X-Retry-After-Ms": str(int(fault.retry_after * 1000))}
            return web.json_response({"s": "error", "code": -429, "message": "request limit reached"},
                                     status=429, headers=headers)
        if fault.body == "json":
            return error(-96, "Something went wrong. Please try again later", status=fault.status)
        text = (f"<html><head><title>{fault.status} Service Unavailable</title></head><body><center><h1>"
                f"{fault.status}</h1></center><hr><center>nginx</center></body></html>")
        return web.Response(status=fault.status, text=text, content_type="text/html")

    def _rate_limited(self, request: web.Request) -> web.Response | None:
        """10 requests/s on all routes, 10 orders/s on order routes (place, modify, cancel)."""
        now = time.monotonic()
        windows = [self._req_times]
        if request.path.endswith(ORDER_ROUTES):
            windows.append(self._order_times)
        for window in windows:
            while window and now - window[0] >= 1.0:
                window.popleft()
            if len(window) >= 10:
                wait = 1.0 - (now - window[0])
                headers = {"Retry-After": str(max(1, math.ceil(wait))), "X-Retry-After-Ms": str(int(wait * 1000))}
                return web.json_response({"s": "error", "code": -429, "message": "request limit reached"},
                                         status=429, headers=headers)
        for window in windows:
            window.append(now)
        return None

    def _auth(self, request: web.Request, bare_ok: bool = False) -> web.Response | None:
        try:
            self.auth.check(request.headers.get("Authorization"), bare_ok=bare_ok)
        except AuthError as err:
            return error(err.code, str(err), status=401)
        return None

    @staticmethod
    async def _json(request: web.Request) -> Any:
        text = await request.text()
        if not text:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return None

    # ------------------------------------------------------------------ auth routes

    async def generate_authcode(self, request: web.Request) -> web.Response:
        q = request.query
        if not q.get("client_id"):
            return error(-352, "Invalid app id")
        if not q.get("redirect_uri"):
            return error(-50, "Please provide redirect_uri")
        code = self.auth.auth_code(q["client_id"])
        params = {"s": "ok", "code": "200", "auth_code": code, "state": q.get("state", "")}
        uri = q["redirect_uri"]
        raise web.HTTPFound(uri + ("&" if "?" in uri else "?") + urllib.parse.urlencode(params))

    async def validate_authcode(self, request: web.Request) -> web.Response:
        try:
            return web.json_response(self.auth.validate_authcode(await self._json(request)))
        except AuthError as err:
            return error(err.code, str(err))

    async def logout(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        info = self.auth.check(request.headers.get("Authorization"))
        info.revoked = True
        return web.json_response({"s": "ok", "code": 200, "message": "you are logged out"})

    # ------------------------------------------------------------------ account routes

    async def profile(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        return ok(data={"name": "SIM USER", "display_name": "SIM", "fy_id": FY_ID, "image": None,
                        "email_id": "sim.user@example.com", "pan": "AAAPZ0000Z", "pin_change_date": "",
                        "mobile_number": "9999999999", "totp": True, "pwd_change_date": None,
                        "pwd_to_expire": 90, "ddpi_enabled": False, "mtf_enabled": False})

    async def funds(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        return ok(fund_limit=self.broker.funds())

    async def holdings(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        return ok(**self.broker.holdings())

    async def positions(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        return ok(**self.broker.position_book())

    async def tradebook(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        return ok(tradeBook=self.broker.tradebook(request.query.get("order_tag")))

    async def orderbook(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        q = request.query
        return ok(orderBook=self.broker.orderbook(q.get("id"), q.get("order_tag")))

    # ------------------------------------------------------------------ order routes

    def _place(self, body: Any) -> tuple[int, dict[str, Any]]:
        try:
            order, _ = self.broker.place(body)
        except OrderError as err:
            return 400, {"s": "error", "code": err.code, "message": str(err)}
        if order.status == REJECTED:
            return 400, {"s": "error", "code": -99, "message": order.message, "id": order.id}
        return 200, {"s": "ok", "code": 1101, "message": f"Successfully placed order Ref. No.{order.id}",
                     "id": order.id}

    def _modify(self, body: Any) -> tuple[int, dict[str, Any]]:
        try:
            order, _ = self.broker.modify(body)
        except OrderError as err:
            return 400, {"s": "error", "code": err.code, "message": str(err)}
        return 200, {"s": "ok", "code": 1102, "message": "Successfully modified order", "id": order.id}

    def _cancel(self, body: Any) -> tuple[int, dict[str, Any]]:
        try:
            order, _ = self.broker.cancel(body)
        except OrderError as err:
            return 400, {"s": "error", "code": err.code, "message": str(err)}
        return 200, {"s": "ok", "code": 1103, "message": "Successfully cancelled order", "id": order.id}

    async def place_order(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        status, body = self._place(await self._json(request))
        return web.json_response(body, status=status)

    async def modify_order(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        status, body = self._modify(await self._json(request))
        return web.json_response(body, status=status)

    async def cancel_order(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        body = await self._json(request)
        if "order_id" in request.match_info:
            body = {"id": request.match_info["order_id"]}
        status, reply = self._cancel(body)
        return web.json_response(reply, status=status)

    async def multi_order(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        items = await self._json(request)
        if not isinstance(items, list) or not items:
            return error(-50, "Invalid input: send a list of orders")
        if len(items) > 10:
            return error(-50, "Invalid input: at most 10 orders per request")
        action = {"POST": self._place, "PATCH": self._modify, "DELETE": self._cancel}[request.method]
        data = []
        for item in items:
            status, body = action(item)
            data.append({"statusCode": status, "body": body, "statusDescription": "OK" if status == 200 else
                         "Bad Request"})
        return ok(data=data)

    async def exit_positions(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        try:
            self.broker.exit_positions(await self._json(request))
        except OrderError as err:
            return error(err.code, str(err))
        return ok(message="The positions are being exited")

    # ------------------------------------------------------------------ data routes

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

    # ------------------------------------------------------------------ data socket

    async def hsm_socket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(timeout=2.0)
        await ws.prepare(request)
        conn = DataConn(ws)
        self.data_conns.add(conn)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    await self._on_hsm(conn, msg.data)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.data_conns.discard(conn)
        return ws

    async def _send(self, ws: web.WebSocketResponse, data: bytes | str) -> None:
        if ws.closed:
            return
        try:
            if isinstance(data, str):
                await ws.send_str(data)
            else:
                await ws.send_bytes(data)
        except (ConnectionResetError, RuntimeError):
            pass

    async def _on_hsm(self, conn: DataConn, data: bytes) -> None:
        try:
            req = hsm.decode(data)
        except hsm.ProtocolError as err:
            log.debug("bad HSM frame: %s", err)
            return
        if req.type == hsm.AUTH:
            key = req.fields.get(1, b"").decode(errors="replace")
            conn.authed = self.auth.check_hsm_key(key)
            await self._send(conn.ws, hsm.auth_reply(conn.authed))
        elif req.type in (hsm.PING, hsm.ACK):
            return
        elif not conn.authed:
            await self._send(conn.ws, hsm.simple_reply(req.type, ok=False))
        elif req.type == hsm.MODE:
            conn.lite = req.mode() == "L"
            await self._send(conn.ws, hsm.simple_reply(hsm.MODE))
        elif req.type == hsm.SUBSCRIBE:
            await self._subscribe(conn, req)
        elif req.type == hsm.UNSUBSCRIBE:
            try:
                for topic in req.topics():
                    conn.topics.pop(topic, None)
            except hsm.ProtocolError:
                await self._send(conn.ws, hsm.simple_reply(hsm.UNSUBSCRIBE, ok=False))
                return
            await self._send(conn.ws, hsm.simple_reply(hsm.UNSUBSCRIBE))
        elif req.type in (hsm.PAUSE, hsm.RESUME):
            mask = req.channel_mask()
            channels = {c for c in range(64) if mask >> c & 1}
            if req.type == hsm.PAUSE:
                conn.paused |= channels
            else:
                conn.paused -= channels
            await self._send(conn.ws, hsm.simple_reply(req.type))
            if req.type == hsm.RESUME:
                await self._send_updates(conn, None)

    async def _subscribe(self, conn: DataConn, req: hsm.Request) -> None:
        try:
            topics = req.topics()
        except hsm.ProtocolError:
            await self._send(conn.ws, hsm.simple_reply(hsm.SUBSCRIBE, ok=False))
            return
        channel = req.channel()
        entries = []
        for topic in topics:
            hit = self.resolve_topic(topic)
            if hit is None:
                continue
            inst, kind = hit
            if topic in conn.topics:
                topic_id = conn.topics[topic][0]
            else:
                topic_id, conn.next_id = conn.next_id, conn.next_id + 1
            conn.topics[topic] = (topic_id, kind, inst, channel)
            q = self.market.quotes[inst.symbol]
            entries.append(hsm.snapshot_entry(topic_id, topic, hsm_values(kind, q, inst, self.market.now),
                                              "NSE" if inst.exchange == 10 else "BSE", inst.token, inst.symbol))
        await self._send(conn.ws, hsm.simple_reply(hsm.SUBSCRIBE))
        if entries:
            conn.msg_no += 1
            await self._send(conn.ws, hsm.data_frame(conn.msg_no, entries))

    async def _send_updates(self, conn: DataConn, symbol: str | None) -> None:
        """One DATA frame with an update for every (or every ``symbol``) topic of the connection."""
        entries = []
        for topic, (topic_id, kind, inst, channel) in conn.topics.items():
            if (symbol is not None and inst.symbol != symbol) or channel in conn.paused:
                continue
            q = self.market.quotes[inst.symbol]
            if conn.lite and kind != "dp":
                entries.append(hsm.lite_entry(topic_id, int(round(q.ltp * 100))))
            else:
                entries.append(hsm.update_entry(topic_id, hsm_values(kind, q, inst, self.market.now)))
        if entries:
            conn.msg_no += 1
            await self._send(conn.ws, hsm.data_frame(conn.msg_no, entries))

    # ------------------------------------------------------------------ order socket

    async def order_socket(self, request: web.Request) -> web.StreamResponse:
        try:
            self.auth.check(request.headers.get("authorization"))
        except AuthError:
            return web.Response(status=403, text="Forbidden")
        ws = web.WebSocketResponse(timeout=2.0)
        await ws.prepare(request)
        conn = OrderConn(ws)
        self.order_conns.add(conn)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                if msg.data == "ping":
                    await self._send(ws, "pong")
                    continue
                try:
                    req = json.loads(msg.data)
                except json.JSONDecodeError:
                    continue
                if isinstance(req, dict) and req.get("T") == "SUB_ORD":
                    lists = set(_flatten(req.get("SLIST", [])))
                    if req.get("SUB_T", 1) == -1:
                        conn.lists -= lists
                        reply = {"code": 1605, "message": "Successfully unsubscribed", "s": "ok"}
                    else:
                        conn.lists |= lists
                        reply = {"code": 1605, "message": "Successfully subscribed", "s": "ok"}
                    await self._send(ws, json.dumps(reply))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.order_conns.discard(conn)
        return ws

    async def flush(self) -> None:
        """Push the broker's pending order/trade/position events to subscribed order sockets."""
        while self.pending:
            events, self.pending[:] = list(self.pending), []
            for kind, payload in events:
                text = json.dumps({"s": "ok", kind: payload})
                for conn in list(self.order_conns):
                    if kind in conn.lists:
                        await self._send(conn.ws, text)

    # ------------------------------------------------------------------ market clock

    async def advance(self, n: int) -> int:
        done = 0
        for _ in range(n):
            tick = self.market.step()
            if tick is None:
                break
            done += 1
            self.broker.on_tick(tick)
            await self.publish(tick)
            await self.flush()
        return done

    async def publish(self, tick: SimTick) -> None:
        if self.faults.stalled:
            return
        for conn in list(self.data_conns):
            if conn.authed:
                await self._send_updates(conn, tick.symbol)

    async def resume_ticks(self) -> None:
        self.faults.stalled = False
        for conn in list(self.data_conns):
            if conn.authed:
                await self._send_updates(conn, None)

    async def drop_sockets(self, which: str = "all") -> int:
        conns: list[Any] = []
        if which in ("data", "all"):
            conns += list(self.data_conns)
        if which in ("order", "all"):
            conns += list(self.order_conns)
        for conn in conns:
            await conn.ws.close(code=1001, message=b"simulated drop")
        return len(conns)

    # ------------------------------------------------------------------ /_sim controls

    def state(self) -> dict[str, Any]:
        return {"market": self.market.state(),
                "orders": self.broker.orderbook(), "trades": self.broker.tradebook(),
                "positions": self.broker.position_book(), "funds": self.broker.funds(),
                "faults": self.faults.describe(),
                "connections": {"data": len(self.data_conns), "order": len(self.order_conns)}}

    async def sim_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())

    async def sim_faults(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        if not isinstance(body, dict) or "kind" not in body:
            return web.json_response({"error": "send {\"kind\": ..., ...params}"}, status=400)
        params = dict(body)
        kind = params.pop("kind")
        try:
            result = await self.inject(kind, **params)
        except (TypeError, ValueError) as err:
            return web.json_response({"error": str(err)}, status=400)
        return web.json_response({"ok": True, "result": result})

    async def sim_clear_faults(self, request: web.Request) -> web.Response:
        await self.clear_faults()
        return web.json_response({"ok": True})

    async def sim_advance(self, request: web.Request) -> web.Response:
        body = await self._json(request) or {}
        n = int(body.get("ticks", 1))
        if "to" in body:
            n = self.market.ticks_until(_epoch(body["to"]))
        return web.json_response({"ticks": await self.advance(n), "market": self.market.state()})

    async def sim_reset(self, request: web.Request) -> web.Response:
        self.broker.reset()
        await self.clear_faults()
        return web.json_response({"ok": True})

    async def sim_login(self, request: web.Request) -> web.Response:
        body = await self._json(request) or {}
        return web.json_response({"access_token": self.auth.mint(body.get("app_id"))})

    async def inject(self, kind: str, **params: Any) -> Any:
        if kind in ("http_error", "rate_limit", "delay"):
            self.faults.add(HttpFault(kind=kind, **params))
            return None
        if params and kind != "drop_sockets":
            raise TypeError(f"fault {kind!r} takes no parameters")
        if kind == "expire_tokens":
            return self.auth.revoke_all()
        if kind == "drop_sockets":
            which = params.pop("which", "all")
            if params or which not in ("data", "order", "all"):
                raise ValueError("drop_sockets takes which='data' | 'order' | 'all'")
            return await self.drop_sockets(which)
        if kind == "stall_ticks":
            self.faults.stalled = True
            return None
        if kind == "resume_ticks":
            await self.resume_ticks()
            return None
        raise ValueError(f"unknown fault {kind!r}: http_error, rate_limit, delay, expire_tokens, drop_sockets, "
                         f"stall_ticks, resume_ticks")

    async def clear_faults(self) -> None:
        was_stalled = self.faults.stalled
        self.faults.clear()
        if was_stalled:
            await self.resume_ticks()

    async def close_all(self) -> None:
        for conn in list(self.data_conns) + list(self.order_conns):
            await conn.ws.close(code=1001, message=b"server shutdown")


def _flatten(items: Any) -> list[str]:
    out: list[str] = []
    for item in items if isinstance(items, list) else [items]:
        out.extend(_flatten(item) if isinstance(item, list) else [str(item)])
    return out


def _epoch(value: Any) -> int:
    if isinstance(value, (int, float)):
        return int(value)
    ts = dt.datetime.fromisoformat(str(value))
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=IST)
    return int(ts.timestamp())


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

