"""Point the real ``fyers_apiv3`` SDK (3.2.0) at a simulator on this machine (doc section 8), and undo it.

The SDK has no base-URL setting; this module patches, reversibly:

1. ``fyersModel.Config.API`` / ``DATA_API`` (read on every call: covers FyersModel, sync and async, and
   SessionModel);
2. the data socket: ``FyersDataSocket.__init__`` is wrapped to set ``_FyersDataSocket__url`` after each
   construction (``prepare_data_socket`` does it by hand), ``SymbolConversion.__init__`` to set its
   ``symbols_token_api``, and ``defines.INDEX_HSM_MAPPING_API`` to the simulator's index mapping (the cache
   is emptied so that it is fetched from there);
3. the order socket: ``FyersOrderSocket.__init__`` wrapped to set ``_FyersOrderSocket__url``;
4. the sockets' singletons are reset, so every construction gives a fresh object;
5. fast teardown: ``data_ws.time`` / ``order_ws.time`` become a shim whose ``sleep`` turns calls of
   ``fast_sleep_from`` seconds or more (the 10 s ping loops; by default also the 5 s reconnect backoff)
   into ``fast_sleep_s``; the 2 s connect wait stays, it is needed.

Sockets are closed quickly with ``close_data_socket`` / ``close_order_socket`` (restart off, the server
drops the connection, then ``close_connection()``); the undo closes every socket built while patched
that is still connected, so that no non-daemon SDK thread keeps the process alive.

This is the only simulator module that imports the SDK.
"""

from __future__ import annotations

import contextlib
import threading
import time as _time
from collections.abc import Callable, Iterator
from typing import Any

from fyers_apiv3 import fyersModel
from fyers_apiv3.FyersWebsocket import data_ws, defines, order_ws

from tradebot.live.adapters.fyers.simulator.server import DATA, HSM_PATH, INDEX_MAPPING_PATH, ORDER_WS_PATH, API


class _FastTime:
    """The ``time`` module, with long sleeps shortened."""

    def __init__(self, long_s: float, short_s: float):
        self.long_s, self.short_s = long_s, short_s

    def sleep(self, seconds: float) -> None:
        _time.sleep(self.short_s if seconds >= self.long_s else seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(_time, name)


def _endpoint(sim_or_port: Any, host: str) -> tuple[str, int, Any]:
    if isinstance(sim_or_port, int):
        return host, sim_or_port, None
    return sim_or_port.host, int(sim_or_port.port), sim_or_port


def _urls(host: str, port: int) -> dict[str, str]:
    base = f"http://{host}:{port}"
    return {"api": base + API, "data": base + DATA, "symbol_token": base + DATA + "/symbol-token",
            "index_mapping": base + INDEX_MAPPING_PATH, "data_ws": f"ws://{host}:{port}{HSM_PATH}",
            "order_ws": f"ws://{host}:{port}{ORDER_WS_PATH}"}


def prepare_data_socket(ds: Any, sim_or_port: Any, host: str = "127.0.0.1") -> Any:
    """Point one constructed ``FyersDataSocket`` at the simulator (before ``connect()``)."""
    h, port, _ = _endpoint(sim_or_port, host)
    ds._FyersDataSocket__url = _urls(h, port)["data_ws"]
    return ds


def prepare_order_socket(sock: Any, sim_or_port: Any, host: str = "127.0.0.1") -> Any:
    """Point one constructed ``FyersOrderSocket`` at the simulator (before ``connect()``)."""
    h, port, _ = _endpoint(sim_or_port, host)
    sock._FyersOrderSocket__url = _urls(h, port)["order_ws"]
    return sock


def close_data_socket(ds: Any, sim: Any = None) -> None:
    """Close a data socket in about 0.2 s: no reconnect, the server drops it, then ``close_connection``."""
    ds.restart_flag = False
    if sim is not None and not isinstance(sim, int) and ds.is_connected():
        sim.inject("drop_sockets", which="data")
    if ds.is_connected():
        ds.close_connection()
    infy = getattr(ds, "infy_loop", None)
    if infy is not None:
        ds._FyersDataSocket__ws_run = False
        infy.join(5)


def close_order_socket(sock: Any, sim: Any = None) -> None:
    """As ``close_data_socket``; also covers the SDK's need of ``keep_running()`` before closing."""
    sock.restart_flag = False
    if sim is not None and not isinstance(sim, int) and sock.is_connected():
        sim.inject("drop_sockets", which="order")
    if sock.is_connected():
        if sock.running_thread is None:
            sock.running_thread = threading.Thread(target=lambda: None)
            sock.running_thread.start()
        sock.close_connection()
    elif sock.running_thread is not None:
        sock.stop_running()
        sock.running_thread.join(5)


def point_sdk_at(sim_or_port: Any, host: str = "127.0.0.1", fast_teardown: bool = True,
                 fast_sleep_from: float = 5.0, fast_sleep_s: float = 0.2) -> Callable[[], None]:
    """Patch the SDK to talk to the simulator (a ``FyersSimulator`` or a port); returns the undo."""
    h, port, sim = _endpoint(sim_or_port, host)
    urls = _urls(h, port)
    saved: list[tuple[Any, str, Any]] = []
    created: list[Any] = []

    def patch(obj: Any, name: str, value: Any) -> None:
        saved.append((obj, name, obj.__dict__.get(name, _MISSING) if isinstance(obj, type) else getattr(obj, name)))
        setattr(obj, name, value)

    patch(fyersModel.Config, "API", urls["api"])
    patch(fyersModel.Config, "DATA_API", urls["data"])
    patch(defines, "INDEX_HSM_MAPPING_API", urls["index_mapping"])
    patch(data_ws.SymbolConversion, "_index_hsm_mapping_cache", None)

    conv_init = data_ws.SymbolConversion.__init__

    def symbol_conversion_init(self, *args, **kwargs):
        conv_init(self, *args, **kwargs)
        self.symbols_token_api = urls["symbol_token"]

    ds_init = data_ws.FyersDataSocket.__init__

    def data_socket_init(self, *args, **kwargs):
        ds_init(self, *args, **kwargs)
        self._FyersDataSocket__url = urls["data_ws"]
        created.append(self)

    os_init = order_ws.FyersOrderSocket.__init__

    def order_socket_init(self, *args, **kwargs):
        os_init(self, *args, **kwargs)
        self._FyersOrderSocket__url = urls["order_ws"]
        created.append(self)

    patch(data_ws.SymbolConversion, "__init__", symbol_conversion_init)
    patch(data_ws.FyersDataSocket, "__init__", data_socket_init)
    patch(order_ws.FyersOrderSocket, "__init__", order_socket_init)
    patch(data_ws.FyersDataSocket, "_instance", None)
    patch(order_ws.FyersOrderSocket, "_instance", None)
    if fast_teardown:
        shim = _FastTime(fast_sleep_from, fast_sleep_s)
        patch(data_ws, "time", shim)
        patch(order_ws, "time", shim)

    def undo() -> None:
        for sock in created:
            with contextlib.suppress(Exception):
                if isinstance(sock, data_ws.FyersDataSocket):
                    close_data_socket(sock, sim)
                else:
                    close_order_socket(sock, sim)
        created.clear()
        for obj, name, value in reversed(saved):
            if value is _MISSING:
                with contextlib.suppress(AttributeError):
                    delattr(obj, name)
            else:
                setattr(obj, name, value)
        saved.clear()
        data_ws.FyersDataSocket._instance = None
        order_ws.FyersOrderSocket._instance = None

    return undo


@contextlib.contextmanager
def pointed_at(sim_or_port: Any, **kwargs: Any) -> Iterator[None]:
    """``point_sdk_at`` as a context manager: the patches are undone (and open sockets closed) on exit."""
    undo = point_sdk_at(sim_or_port, **kwargs)
    try:
        yield
    finally:
        undo()


_MISSING = object()
