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
from tradebot.live.adapters.fyers.simulator.data_routes import DataRoutes, error, ok
from tradebot.live.adapters.fyers.simulator.tokens import FY_ID, Auth, AuthError
from tradebot.live.adapters.fyers.simulator.faults import HTTP_KINDS, Faults, HttpFault
from tradebot.live.adapters.fyers.simulator.scripted_policy import POLICY_PATH, PolicyRoutes, ScriptedPolicy
from tradebot.live.adapters.fyers.simulator.market import IST, Market, SimTick
from tradebot.live.adapters.fyers.simulator.broker import REJECTED, Broker, Event, OrderError
from tradebot.live.adapters.fyers.simulator.payloads import hsm_values
from tradebot.live.adapters.fyers.simulator.symbols import Instrument, normalise_name

log = logging.getLogger(__name__)

API, DATA = "/api/v3", "/data"
HSM_PATH, ORDER_WS_PATH = "/hsm/v1-5/prod", "/trade/v3"
INDEX_MAPPING_PATH = "/sym_details/index_hsm_mapping.json"
ORDER_ROUTES = ("/orders/sync", "/multi-order/sync")




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


class SimServer(DataRoutes, PolicyRoutes):
    def __init__(self, market: Market, broker: Broker, auth: Auth, faults: Faults,
                 enforce_rate_limits: bool = False, policy: ScriptedPolicy | None = None):
        self.market, self.broker, self.auth, self.faults = market, broker, auth, faults
        self.policy = policy or ScriptedPolicy()
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
        self.add_policy_routes(r)
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
        delay, fault, after = self.faults.take(request.method, path)
        if delay:
            await asyncio.sleep(delay)
        if fault is not None and fault.kind == "expire_tokens":
            self.auth.revoke_all()  # the token dies as this request arrives: it is refused like any after it
        elif fault is not None:
            return self._fault_response(fault)
        if self.enforce_rate_limits and not path.startswith(("/hsm/", "/trade/")):
            limited = self._rate_limited(request)
            if limited is not None:
                return limited
        try:
            response = await handler(request)
        except ConnectionResetError:  # the client went away mid-request (its timeout): nobody to answer
            return web.Response(status=499)
        finally:
            await self.flush()
        if after is not None and request.transport is not None:  # lose_reply: done, but nobody hears of it
            request.transport.abort()
            return web.Response(status=200)  # written to a closed connection: nobody gets it
        return response

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
        return ok(tradeBook=self.broker.tradebook(request.query.get("order_tag"), lag_s=self.faults.book_lag_s))

    async def orderbook(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        q = request.query
        return ok(orderBook=self.broker.orderbook(q.get("id"), q.get("order_tag"), lag_s=self.faults.book_lag_s))

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

    # ------------------------------------------------------------------ data socket

    async def hsm_socket(self, request: web.Request) -> web.StreamResponse:
        if "data" in self.faults.refused:
            return web.Response(status=503, text="Service Unavailable")
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
        if "order" in self.faults.refused:
            return web.Response(status=503, text="Service Unavailable")
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
        if kind in HTTP_KINDS and (kind != "expire_tokens" or params):  # bare expire_tokens: at once
            self.faults.add(HttpFault(kind=kind, **params))
            return None
        if kind == "slow_policy":  # the policy server answers late: a delay on its act route
            self.faults.add(HttpFault(kind="delay", route=f"{POLICY_PATH}/act", seconds=float(params.pop("seconds", 8.0)),
                                      count=params.pop("count", 1)))
            if params:
                raise TypeError(f"slow_policy takes seconds= and count=, not {sorted(params)}")
            return None
        if kind == "book_lag":
            seconds = float(params.pop("seconds", 3.0))
            if params or seconds < 0:
                raise ValueError("book_lag takes seconds= (>= 0; 0 turns it off)")
            self.faults.book_lag_s = seconds
            return None
        if kind in ("drop_sockets", "refuse_sockets", "accept_sockets"):
            which = params.pop("which", "all")
            if params or which not in ("data", "order", "all"):
                raise ValueError(f"{kind} takes which='data' | 'order' | 'all'")
            kinds = {"data", "order"} if which == "all" else {which}
            if kind == "refuse_sockets":  # new handshakes answered 503 until accept_sockets / clear_faults
                self.faults.refused |= kinds
                return await self.drop_sockets(which)
            if kind == "accept_sockets":
                self.faults.refused -= kinds
                return None
            return await self.drop_sockets(which)
        if params:
            raise TypeError(f"fault {kind!r} takes no parameters")
        if kind == "expire_tokens":
            return self.auth.revoke_all()
        if kind == "stall_ticks":
            self.faults.stalled = True
            return None
        if kind == "resume_ticks":
            await self.resume_ticks()
            return None
        raise ValueError(f"unknown fault {kind!r}: {', '.join(HTTP_KINDS)}, slow_policy, book_lag, drop_sockets, "
                         "refuse_sockets, accept_sockets, stall_ticks, resume_ticks")

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
