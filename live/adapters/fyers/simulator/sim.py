"""``FyersSimulator``: the server on its own event loop in a background thread, and its Python API."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, Callable, TypeVar

from aiohttp import web

from tradebot.live.adapters.fyers.simulator.tokens import Auth
from tradebot.live.adapters.fyers.simulator.faults import Faults
from tradebot.live.adapters.fyers.simulator.market import Market, parse_start
from tradebot.live.adapters.fyers.simulator.broker import Broker
from tradebot.live.adapters.fyers.simulator.scripted_policy import ScriptedPolicy
from tradebot.live.adapters.fyers.simulator.server import DATA, HSM_PATH, INDEX_MAPPING_PATH, ORDER_WS_PATH, API, SimServer

T = TypeVar("T")
DEFAULT_DATA = Path(__file__).resolve().parents[4] / "data" / "sample" / "NSE_NIFTY50-INDEX_1m.csv.gz"


class FyersSimulator:
    """A local Fyers API v3 look-alike (REST, data socket, order socket) over replayed bar files.

    ``speed=None`` is step mode (the clock moves only through ``advance``); a number is market seconds
    per wall second (gaps between ticks longer than one bar are shortened to one bar).
    """

    def __init__(self, data: list[Any] | Any | None = None, host: str = "127.0.0.1", port: int = 0,
                 speed: float | None = None, token_ttl_s: float | None = None, start: Any = "last_session",
                 slippage_bps: float = 0.0, initial_funds: float = 1_000_000.0, history_sees_future: bool = False,
                 app_id: str | None = None, secret: str | None = None, tradable_indices: bool = True,
                 enforce_rate_limits: bool = False, fill_at_quote: bool | None = None, policy_seed: int = 0,
                 policy_obs_dim: int = 0):
        if data is None:
            data = [DEFAULT_DATA]
        elif not isinstance(data, (list, tuple)) or (isinstance(data, tuple) and len(data) == 2
                                                     and isinstance(data[0], str) and ":" in data[0]):
            data = [data]
        if speed is not None and speed <= 0:
            raise ValueError("speed must be positive (market seconds per wall second), or None for step mode")
        self._data = list(data)
        self._start = start
        self.host, self._port, self.speed = host, port, speed
        self.market = Market(self._data, start=start, history_sees_future=history_sees_future)
        self.broker = Broker(self.market, initial_funds=initial_funds, slippage_bps=slippage_bps,
                             tradable_indices=tradable_indices,
                             fill_at_quote=speed is not None if fill_at_quote is None else fill_at_quote)
        self.auth = Auth(token_ttl_s=token_ttl_s, app_id=app_id, secret=secret)
        self.faults = Faults()
        self.server = SimServer(self.market, self.broker, self.auth, self.faults,
                                enforce_rate_limits=enforce_rate_limits,
                                policy=ScriptedPolicy(policy_seed, policy_obs_dim))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._pacer: asyncio.Task | None = None
        self._ready = threading.Event()
        self.paused = threading.Event()
        self._startup_error: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "FyersSimulator":
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name="fyers-simulator", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._startup_error is not None:
            self._thread.join(5)
            self._thread = None
            raise self._startup_error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._startup())
        except BaseException as err:  # noqa: BLE001 - handed to the starting thread
            self._startup_error = err
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._shutdown())
            loop.close()

    async def _startup(self) -> None:
        self._runner = web.AppRunner(self.server.app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port, shutdown_timeout=2.0)
        await site.start()
        self._port = site._server.sockets[0].getsockname()[1]  # the real port when 0 was asked
        if self.speed is not None:
            self._pacer = asyncio.get_running_loop().create_task(self._pace())

    async def _shutdown(self) -> None:
        if self._pacer is not None:
            self._pacer.cancel()
            try:
                await self._pacer
            except asyncio.CancelledError:
                pass
        await self.server.close_all()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _pace(self) -> None:
        cap = self.market.bar_seconds()
        while not self.market.finished:
            gap = min(max(self.market.time_of_next() - self.market.now, 0), cap)
            await asyncio.sleep(gap / self.speed)
            if not self.paused.is_set():
                await self.server.advance(1)

    def pause(self) -> None:
        """Paced mode: stop the market clock (no prints, no fills) until ``resume``."""
        self.paused.set()

    def resume(self) -> None:
        self.paused.clear()

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(15)
        self._thread = None

    def __enter__(self) -> "FyersSimulator":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Start and block until KeyboardInterrupt (the CLI)."""
        self.start()
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(0.5)
        finally:
            self.stop()

    # ------------------------------------------------------------------ calls into the loop

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` (a coroutine function or a plain function) on the server's loop and return its result."""
        if self._loop is None or self._thread is None:
            raise RuntimeError("the simulator is not running: call start() or use it as a context manager")

        async def runner():
            result = fn(*args, **kwargs)
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(runner(), self._loop).result(60)

    # ------------------------------------------------------------------ URLs

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self._port}"

    @property
    def rest_api_url(self) -> str:
        return self.base_url + API

    @property
    def data_api_url(self) -> str:
        return self.base_url + DATA

    @property
    def symbol_token_url(self) -> str:
        return self.data_api_url + "/symbol-token"

    @property
    def index_mapping_url(self) -> str:
        return self.base_url + INDEX_MAPPING_PATH

    @property
    def data_ws_url(self) -> str:
        return f"ws://{self.host}:{self._port}{HSM_PATH}"

    @property
    def order_ws_url(self) -> str:
        return f"ws://{self.host}:{self._port}{ORDER_WS_PATH}"

    # ------------------------------------------------------------------ Python API

    def login(self, app_id: str = "SIMAPP-100") -> str:
        """An access token minted directly (no auth-code round trip); use ``f"{app_id}:{token}"`` as the header."""
        return self._call(self.auth.mint, app_id)

    def advance(self, ticks: int = 1, to: Any = None) -> int:
        """Emit ``ticks`` ticks (or all ticks up to time ``to``: epoch seconds, ISO text or a Timestamp);
        matching and socket pushes are done when it returns. Returns how many ticks were emitted."""
        if to is not None:
            ts = parse_start(to)
            return self._call(lambda: self.server.advance(self.market.ticks_until(ts)))
        return self._call(self.server.advance, int(ticks))

    def inject(self, kind: str, **params: Any) -> Any:
        """Inject a fault. HTTP faults (for the next ``count`` matching calls, default 1; ``count=None``
        until cleared; optional ``route`` and ``method``):

        * ``inject("http_error", status=503, body="html"|"json", count=1, route=None)``
        * ``inject("rate_limit", retry_after=1.0, count=1, route=None)``: HTTP 429, code -429,
          headers ``Retry-After`` and ``X-Retry-After-Ms``
        * ``inject("delay", seconds=1.0, count=1, route=None)``
        * ``inject("lose_reply", count=1, route="/orders/sync")``: the request is carried out (the order
          exists), then the connection is dropped without an answer
        * ``inject("expire_tokens", count=1, route="/orders/sync")``: every token dies as that request arrives
        * ``inject("slow_policy", seconds=8.0, count=1)``: the scripted policy (``/policy``) answers late

        Standing, until cleared: ``inject("book_lag", seconds=3.0)`` (the orderbook and tradebook leave out
        what is younger than that), ``inject("refuse_sockets", which="order")`` (drops them and answers new
        handshakes 503: the SDK's reconnects run out; ``inject("accept_sockets", which=...)`` lifts it).

        Immediate: ``inject("expire_tokens")`` (every token issued so far is dead: 401/-16; new logins
        work), ``inject("drop_sockets", which="data"|"order"|"all")`` (the server closes them; returns
        how many), ``inject("stall_ticks")`` / ``inject("resume_ticks")`` (the data socket goes silent
        while the market and matching go on; resuming sends the current state of every topic).
        """
        return self._call(self.server.inject, kind, **params)

    def clear_faults(self) -> None:
        self._call(self.server.clear_faults)

    def orders(self) -> list[dict[str, Any]]:
        """The orderbook (REST shape)."""
        return self._call(self.broker.orderbook)

    def trades(self) -> list[dict[str, Any]]:
        return self._call(self.broker.tradebook)

    def positions(self) -> list[dict[str, Any]]:
        """The net positions (REST shape)."""
        return self._call(lambda: self.broker.position_book()["netPositions"])

    def funds(self) -> list[dict[str, Any]]:
        return self._call(self.broker.funds)

    def state(self) -> dict[str, Any]:
        """Clock, last prices, orders, trades, positions, funds, faults and connection counts."""
        return self._call(self.server.state)

    def now(self) -> int:
        """The simulated clock, epoch seconds."""
        return self._call(lambda: self.market.now)

    def ltp(self, symbol: str) -> float:
        return self._call(lambda: self.market.quotes[symbol].ltp)

    def reset(self) -> None:
        """Forget orders, trades and positions, and clear the faults (the clock stays)."""
        def _reset():
            self.broker.reset()
            return self.server.clear_faults()
        self._call(_reset)

    def connections(self) -> dict[str, int]:
        return self._call(lambda: {"data": len(self.server.data_conns), "order": len(self.server.order_conns)})
