"""Thin, restartable wrappers around the SDK's two sockets (both are process singletons in the SDK).

* ``OrderSocket``: ``order_ws.FyersOrderSocket`` -> callbacks for orders, trades, positions. Subscribes
  in ``on_connect`` (the SDK calls it again after each of its reconnects; a subscribe sent before the
  socket is open is silently dropped by the SDK, so it is sent again until the 1605 ack arrives).
* ``DataSocket``: ``data_ws.FyersDataSocket`` -> tick dicts; subscribes in ``on_connect`` too (the SDK
  clears its symbol state on reconnect and only ``on_connect`` runs again).

Each ``start()`` resets the SDK singleton and builds a fresh object, sets its URL (the SDK resets it in
``__init__``), and passes a ``log_path`` so the SDK's socket logs never land in the CWD. The SDK's
threads are made daemons (its ``background_flag``): they never keep a stopped process alive.

A dropped order socket: the SDK reconnects by itself but tells nobody (it calls no close callback while
it retries, and after its last retry only prints "Connection abandoned"). ``OrderSocket`` hooks the SDK's
close handler: ``subscribed`` is cleared at every close (the client then polls REST until the socket
is subscribed again) and ``abandoned`` is set when the SDK gives up (the client starts a new one). ``stop()``
turns the SDK's own reconnect off and closes; ``close_connection`` joins threads that sleep 10 s, so
``stop(wait=False)`` does it in a background thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tradebot.live.adapters.fyers.rest import Endpoints, state_dir

log = logging.getLogger("tradebot.fyers")

_patch_lock = threading.Lock()
_symbol_token_url: str | None = None


def _patch_symbol_token(endpoints: Endpoints) -> None:
    """Point ``data_ws.SymbolConversion`` (hard-coded URL) at ``endpoints.symbol_token``; in simulation
    also skip the public index-mapping download (10 s timeout each subscribe when offline)."""
    global _symbol_token_url
    from fyers_apiv3.FyersWebsocket import data_ws

    with _patch_lock:
        _symbol_token_url = endpoints.symbol_token
        conv = data_ws.SymbolConversion
        if not getattr(conv.__init__, "_tradebot_patch", False):  # (again if someone restored the original)
            original = conv.__init__

            def init(self, *args, **kwargs):
                original(self, *args, **kwargs)
                if _symbol_token_url:
                    self.symbols_token_api = _symbol_token_url

            init._tradebot_patch = True  # type: ignore[attr-defined]
            conv.__init__ = init
        if endpoints.simulated and conv._index_hsm_mapping_cache is None:
            conv._index_hsm_mapping_cache = {}


def _log_dir(log_path: str | Path | None) -> str:
    p = Path(log_path) if log_path is not None else state_dir() / "logs"
    p.mkdir(parents=True, exist_ok=True)
    return str(p)


def _close_sdk(sock: Any, wait: bool) -> None:
    if sock is None:
        return
    sock.restart_flag = False
    if getattr(sock, "running_thread", "absent") is None:  # order socket: close joins it
        t = threading.Thread(target=lambda: None)
        t.start()
        sock.running_thread = t

    def close() -> None:
        try:
            sock.close_connection()
        except Exception:  # closing a socket that died half-way must not raise into the caller
            log.debug("fyers socket close failed", exc_info=True)

    if wait:
        close()
    else:
        threading.Thread(target=close, name="fyers-socket-close", daemon=True).start()


class OrderSocket:
    """The order socket; ``on_order``/``on_trade``/``on_position`` get the SDK's renamed dicts."""

    def __init__(self, access_token: str, *, on_order: Callable[[dict], None], on_trade: Callable[[dict], None],
                 on_position: Callable[[dict], None], on_error: Callable[[Any], None] | None = None,
                 endpoints: Endpoints | None = None, log_path: str | Path | None = None, reconnect_retry: int = 50):
        self._token = access_token  # "APPID:TOKEN"
        self.on_order, self.on_trade, self.on_position = on_order, on_trade, on_position
        self.on_error = on_error
        self.endpoints = endpoints or Endpoints.resolve()
        self.log_path = log_path
        self.reconnect_retry = reconnect_retry
        self.subscribed = threading.Event()
        self.connects = 0
        self.closes = 0
        self.abandoned = False
        self._sock: Any = None

    def __repr__(self) -> str:
        return (f"OrderSocket(url={self.endpoints.order_ws!r}, subscribed={self.subscribed.is_set()}, "
                f"abandoned={self.abandoned})")

    def start(self) -> None:
        from fyers_apiv3.FyersWebsocket import order_ws

        order_ws.FyersOrderSocket._instance = None
        self.subscribed.clear()
        sock = order_ws.FyersOrderSocket(
            access_token=self._token, write_to_file=False, log_path=_log_dir(self.log_path),
            on_trades=lambda m: self._dispatch(self.on_trade, m, "trades"),
            on_positions=lambda m: self._dispatch(self.on_position, m, "positions"),
            on_orders=lambda m: self._dispatch(self.on_order, m, "orders"),
            on_general=self._general, on_error=self._error, on_connect=self._connected,
            on_close=lambda m: log.info("fyers order socket closed: %s", m),
            reconnect=True, reconnect_retry=self.reconnect_retry)
        sock._FyersOrderSocket__url = self.endpoints.order_ws
        sock.background_flag = True  # daemon threads
        sdk_close = sock._FyersOrderSocket__on_close

        def on_close(ws: Any, close_code: Any = None, close_reason: Any = None) -> None:
            self.subscribed.clear()  # nothing arrives until the 1605 ack of a new subscription
            self.closes += 1
            log.warning("fyers order socket closed (%s %s); polling REST until it is subscribed again",
                        close_code, close_reason)
            sdk_close(ws, close_code, close_reason)  # the SDK's own reconnect (it returns when that is done)
            if (sock.restart_flag and not sock.is_connected()
                    and sock.reconnect_attempts >= sock.max_reconnect_attempts):
                self.abandoned = True

        sock._FyersOrderSocket__on_close = on_close  # the SDK's handler looks it up at every close
        self.abandoned = False
        self._sock = sock
        sock.connect()

    def _connected(self) -> None:
        self.connects += 1
        sock = self._sock
        for _ in range(50):  # the SDK drops a subscribe sent before the socket opened
            if sock is None:
                return
            sock.subscribe(data_type="OnOrders,OnTrades,OnPositions")
            if self.subscribed.wait(0.1):
                return

    def _general(self, msg: Any) -> None:
        if isinstance(msg, dict) and msg.get("code") == 1605:
            self.subscribed.set()
        else:
            log.debug("fyers order socket: %s", msg)

    def _error(self, msg: Any) -> None:
        log.warning("fyers order socket error: %s", msg)
        if self.on_error is not None:
            self.on_error(msg)

    @staticmethod
    def _dispatch(fn: Callable[[dict], None], msg: Any, key: str) -> None:
        if isinstance(msg, dict) and isinstance(msg.get(key), dict):
            try:
                fn(dict(msg[key]))
            except Exception:  # a bad message must not kill the SDK's socket thread
                log.exception("fyers order socket: handling a %s message failed", key)

    def stop(self, wait: bool = True) -> None:
        sock, self._sock = self._sock, None
        self.subscribed.clear()
        _close_sdk(sock, wait)


class DataSocket:
    """The market-data socket; ``on_tick(msg)`` gets each data dict (``type`` sf / if / lite)."""

    def __init__(self, access_token: str, symbols: Sequence[str], *, on_tick: Callable[[dict], None],
                 on_error: Callable[[Any], None] | None = None, on_connected: Callable[[], None] | None = None,
                 litemode: bool = False, endpoints: Endpoints | None = None, log_path: str | Path | None = None,
                 reconnect_retry: int = 5):
        self._token = access_token  # "APPID:TOKEN"
        self.symbols = list(symbols)
        self.on_tick = on_tick
        self.on_error = on_error
        self.on_connected = on_connected
        self.litemode = litemode
        self.endpoints = endpoints or Endpoints.resolve()
        self.log_path = log_path
        self.reconnect_retry = reconnect_retry
        self.connects = 0
        self.subscribes = 0
        self.authenticated = threading.Event()
        self.errors: list[Any] = []
        self._sock: Any = None

    def __repr__(self) -> str:
        return f"DataSocket(url={self.endpoints.data_ws!r}, symbols={self.symbols!r})"

    def start(self) -> None:
        from fyers_apiv3.FyersWebsocket import data_ws

        _patch_symbol_token(self.endpoints)
        data_ws.FyersDataSocket._instance = None
        self.authenticated.clear()
        sock = data_ws.FyersDataSocket(
            access_token=self._token, write_to_file=False, log_path=_log_dir(self.log_path), litemode=self.litemode,
            reconnect=True, on_message=self._message, on_error=self._error, on_connect=self._connected,
            on_close=lambda m: log.info("fyers data socket closed: %s", m), reconnect_retry=self.reconnect_retry)
        sock._FyersDataSocket__url = self.endpoints.data_ws
        sock.background_flag = True  # daemon threads
        self._sock = sock
        sock.connect()

    def _connected(self) -> None:
        self.connects += 1
        sock = self._sock
        if sock is None:
            return
        self.authenticated.wait(3.0)  # subscribe after the auth reply: an earlier one can be lost
        sock.subscribe(symbols=self.symbols, data_type="SymbolUpdate")
        self.subscribes += 1
        if self.on_connected is not None:
            self.on_connected()

    def _message(self, msg: Any) -> None:
        if not isinstance(msg, dict):
            return
        if msg.get("type") == "cn":
            self.authenticated.set()
            return
        if "ltp" in msg and "symbol" in msg:
            try:
                self.on_tick(msg)
            except Exception:
                log.exception("fyers data socket: handling a tick failed")

    def _error(self, msg: Any) -> None:
        self.errors.append(msg)
        log.warning("fyers data socket error: %s", msg)
        if self.on_error is not None:
            self.on_error(msg)

    def stop(self, wait: bool = True) -> None:
        sock, self._sock = self._sock, None
        _close_sdk(sock, wait)


def wait_for(pred: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()
