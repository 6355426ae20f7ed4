"""Market data from Fyers: history (REST, chunked, resumable, into the canonical store) and the live feed.

History::

    bars = fetch_history(rest, "NSE:SBIN-EQ", "5m", "2024-01-01", "2024-06-30", store=Store("store"))

``/data/history`` takes at most 100 days per request for minute resolutions and 366 for D; the range is
split into such chunks (IST dates, ``date_format=1``, both ends inclusive), each paced by the shared
limiter and retried when temporary. With a ``store``, the days the store already covers are skipped and
each chunk is merged into the store as soon as it arrives (``tradebot.features.store.Store.write``), so an
interrupted fetch resumes where it stopped. Candles outside 09:15-15:30 are dropped, daily candles are
labelled at IST midnight (the store's convention), and a candle that has not closed yet (``range_to`` is
today) is dropped: the last candle can be partial.

Live: ``FyersDataFeed`` (a ``DataFeed``) turns the data socket's messages into ``Tick``s (full mode: the
print's price, the day-volume increase as its volume, the exchange's trade time; lite mode: price only,
stamped with the clock) for the loop's ``BarBuilder``. A watchdog thread restarts the socket (new SDK
object, re-subscribe) when no tick came for ``stall_s`` seconds during the session -- the SDK gives up
silently after its own retries -- and then backfills the gap from history: the bars between the last
tick and now are emitted as ``Bar`` events (ticks that arrive meanwhile are held back until the backfill
is queued), so the feature streams see no hole. The same backfill runs at start when the loop resumes
after ``after[symbol]``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tradebot.features.bars import Bars, validate_symbol
from tradebot.features.resample import canonical_timeframe
from tradebot.live.adapters.fyers.error_translation import FyersRejected
from tradebot.live.adapters.fyers.rest import FyersRest
from tradebot.core.nse_calendar import is_trading_day_ns
from tradebot.core.nse_time import (
    DAY_NS,
    IST,
    IST_OFFSET_NS,
    bar_end,
    bar_start_for,
    is_intraday,
    last_of_session_by_clock,
    session_bounds_ns,
    timeframe_minutes,
)
from tradebot.live.feeds import QueueFeed
from tradebot.live.ports import NS_PER_SECOND, Bar, Clock, Tick
from tradebot.core.errors import UserInputError

log = logging.getLogger("tradebot.fyers")

MINUTE_RESOLUTIONS = {1: "1", 2: "2", 3: "3", 5: "5", 10: "10", 15: "15", 20: "20", 30: "30", 60: "60", 120: "120",
                      240: "240"}
INTRADAY_CHUNK_DAYS = 100
DAILY_CHUNK_DAYS = 366
FIRST_INTRADAY_DATE = date(2017, 7, 3)


def resolution(timeframe: str) -> str:
    """Our bar size -> Fyers' ``resolution`` ("5m" -> "5", "1h" -> "60", "1d" -> "D")."""
    tf = canonical_timeframe(timeframe)
    if not is_intraday(tf):
        return "D"
    minutes = timeframe_minutes(tf)
    if minutes not in MINUTE_RESOLUTIONS:
        raise UserInputError(f"timeframe {timeframe}: Fyers has no such resolution; use one of "
                             + ", ".join(f"{m}m" for m in MINUTE_RESOLUTIONS) + " or 1d")
    return MINUTE_RESOLUTIONS[minutes]


def chunk_days(timeframe: str) -> int:
    return INTRADAY_CHUNK_DAYS if is_intraday(canonical_timeframe(timeframe)) else DAILY_CHUNK_DAYS


def _as_date(value: Any) -> date:
    if isinstance(value, date):
        return value
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise UserInputError(f"date {value!r}: use YYYY-MM-DD") from None
    if ts.tzinfo is not None:
        ts = ts.tz_convert(IST)
    return ts.date()


def chunks(start: date, end: date, days: int) -> list[tuple[date, date]]:
    """Inclusive [from, to] date ranges of at most ``days`` days covering ``start``..``end``."""
    out = []
    d = start
    while d <= end:
        e = min(end, d + timedelta(days=days - 1))
        out.append((d, e))
        d = e + timedelta(days=1)
    return out


def candles_to_frame(candles: Sequence[Sequence[float]], timeframe: str, now_ns: int | None = None) -> pd.DataFrame:
    """Fyers candles ``[epoch, o, h, l, c, v]`` -> a frame indexed by IST bar start (session bars only;
    daily candles at IST midnight; a candle not closed by ``now_ns`` is dropped)."""
    tf = canonical_timeframe(timeframe)
    if not candles:
        return pd.DataFrame(columns=["open", "high", "low", "close", "volume"],
                            index=pd.DatetimeIndex([], tz=IST, name="timestamp"), dtype="float64")
    arr = np.asarray([list(c)[:6] for c in candles], dtype=np.float64)
    ns = (arr[:, 0] * NS_PER_SECOND).astype(np.int64)
    keep = np.ones(len(ns), dtype=bool)
    labels = ns.copy()
    for i, t in enumerate(ns):
        if is_intraday(tf):
            start = bar_start_for(int(t), tf)
            keep[i] = start == int(t)
        else:
            day = (int(t) + IST_OFFSET_NS) // DAY_NS
            labels[i] = day * DAY_NS - IST_OFFSET_NS
        if keep[i] and now_ns is not None:
            keep[i] = bar_end(int(labels[i]), tf) <= now_ns
    frame = pd.DataFrame(arr[keep, 1:6], columns=["open", "high", "low", "close", "volume"],
                         index=pd.DatetimeIndex(pd.to_datetime(labels[keep], utc=True).tz_convert(IST),
                                                name="timestamp"))
    frame = frame[~frame.index.duplicated(keep="last")].sort_index()
    return frame


@dataclass
class FetchReport:
    symbol: str
    timeframe: str
    chunks: int = 0
    skipped_chunks: int = 0
    bars: int = 0
    requests: int = 0


def _missing_ranges(start: date, end: date, have: tuple[date, date] | None) -> list[tuple[date, date]]:
    if have is None:
        return [(start, end)]
    first, last = have
    out = []
    if start < first:
        out.append((start, min(end, first - timedelta(days=1))))
    if end > last:
        out.append((max(start, last + timedelta(days=1)), end))
    return [(a, b) for a, b in out if a <= b]


def fetch_history(rest: FyersRest, symbol: str, timeframe: str, start: Any, end: Any, *, store: Any = None,
                  progress: Callable[[int, int], None] | None = None, now_ns: int | None = None,
                  report: FetchReport | None = None) -> Bars | None:
    """Bars of ``symbol`` from ``start`` to ``end`` (IST dates, inclusive); see the module docstring.

    ``store``: a ``tradebot.features.store.Store`` to merge into (and to skip what it has); ``progress(done, total)``
    after each chunk. Returns the fetched bars (or, with a store, everything the store holds in the range);
    None when there are none.
    """
    validate_symbol(symbol)
    tf = canonical_timeframe(timeframe)
    res = resolution(tf)
    d0, d1 = _as_date(start), _as_date(end)
    if d1 < d0:
        raise UserInputError(f"fetch {symbol}: --end {d1} is before --start {d0}")
    if is_intraday(tf) and d0 < FIRST_INTRADAY_DATE:
        d0 = FIRST_INTRADAY_DATE
    now_ns = time.time_ns() if now_ns is None else now_ns
    report = report if report is not None else FetchReport(symbol, tf)
    have = None
    if store is not None:
        path = store.path(symbol, tf)
        if path.is_file():
            stored = store.read(symbol, tf)
            if len(stored):
                have = (stored.index[0].date(), stored.index[-1].date())
                # the last stored day may be partial (fetched during the session): fetch it again
                have = (have[0], have[1] - timedelta(days=1)) if have[1] > have[0] else None
    plan: list[tuple[date, date]] = []
    for a, b in _missing_ranges(d0, d1, have):
        plan += chunks(a, b, chunk_days(tf))
    report.skipped_chunks = len(chunks(d0, d1, chunk_days(tf))) - len(plan) if have else 0
    frames: list[pd.DataFrame] = []
    for i, (a, b) in enumerate(plan):
        payload = {"symbol": symbol, "resolution": res, "date_format": "1", "range_from": a.isoformat(),
                   "range_to": b.isoformat(), "cont_flag": "1"}
        try:
            resp = rest.call("history", payload)
        except FyersRejected as err:
            if err.code in (-300,):
                raise UserInputError(f"fyers history: {symbol} is not a valid Fyers symbol ({err.fyers_message}); "
                                     "use the symbol master form, e.g. NSE:SBIN-EQ") from None
            raise UserInputError(f"fyers history {symbol} {tf} {a}..{b}: {err}") from None
        report.requests += 1
        frame = candles_to_frame(resp.get("candles") or [], tf, now_ns)
        if len(frame):
            frames.append(frame)
            if store is not None:
                store.write(Bars.from_frame(frame, symbol=symbol, source=f"fyers:{symbol}", timeframe=tf),
                            source=f"fyers:{res}")
        report.chunks += 1
        report.bars += len(frame)
        if progress is not None:
            progress(i + 1, len(plan))
    if store is not None:
        path = store.path(symbol, tf)
        if not path.is_file():
            return None
        got = store.read(symbol, tf).between(pd.Timestamp(d0), pd.Timestamp(d1) + pd.Timedelta(days=1))
        return got if len(got) else None
    if not frames:
        return None
    merged = pd.concat(frames)
    merged = merged[~merged.index.duplicated(keep="last")].sort_index()
    return Bars.from_frame(merged, symbol=symbol, source=f"fyers:{symbol}", timeframe=tf)


@dataclass(frozen=True)
class StoredFetch:
    """What ``fetch_into_store`` did: the requests (``report``), the bars the store now holds in the range
    (None: none), and the store file."""

    report: FetchReport
    bars: Bars | None
    path: Path


def fetch_into_store(symbol: str, timeframe: str, start: Any, end: Any, *, store_dir: str | Path | None = None,
                     api_base: str | None = None, token_file: str | Path | None = None,
                     progress: Callable[[int, int], None] | None = None) -> StoredFetch:
    """``tradebot data fetch --broker fyers``: history into the Parquet store with the saved token, chunked
    and resumable (``fetch_history`` with a store)."""
    from tradebot.features.store import Store
    from tradebot.live.adapters.fyers.auth import load_token
    from tradebot.live.adapters.fyers.rest import Endpoints, make_model, state_dir

    token = load_token(token_file)
    endpoints = Endpoints.resolve(api_base or token.api_base)
    rest = FyersRest(make_model(token.app_id, token.secret(), endpoints=endpoints, log_path=state_dir() / "logs"))
    store = Store(store_dir)
    report = FetchReport(symbol, timeframe)
    bars = fetch_history(rest, symbol, timeframe, start, end, store=store, progress=progress, report=report)
    return StoredFetch(report, bars, store.path(symbol, report.timeframe))


def valid_candles(frame: pd.DataFrame) -> np.ndarray:
    """Which candles pass the checks every bar input passes (``tradebot.features.quality``'s rules): finite
    positive prices, low <= open, close <= high, volume >= 0."""
    o, h, lo, c, v = (frame[k].to_numpy(dtype=np.float64) for k in ("open", "high", "low", "close", "volume"))
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(o) & np.isfinite(h) & np.isfinite(lo) & np.isfinite(c) & np.isfinite(v)
        ok &= (lo > 0) & (lo <= np.minimum(o, c)) & (h >= np.maximum(o, c)) & (v >= 0)
    return ok


def history_bars(rest: FyersRest, symbol: str, timeframe: str, from_ns: int, to_ns: int) -> list[Bar]:
    """Closed session bars of ``symbol`` starting in [from_ns, to_ns) as ``Bar`` events (the backfill); candles
    that fail the input checks (``valid_candles``) are dropped with a warning, as any bad input is."""
    if to_ns <= from_ns:
        return []
    tf = canonical_timeframe(timeframe)
    d0 = pd.Timestamp(from_ns, tz="UTC").tz_convert(IST).date()
    d1 = pd.Timestamp(to_ns, tz="UTC").tz_convert(IST).date()
    out: list[Bar] = []
    for a, b in chunks(d0, d1, chunk_days(tf)):
        resp = rest.call("history", {"symbol": symbol, "resolution": resolution(tf), "date_format": "1",
                                     "range_from": a.isoformat(), "range_to": b.isoformat(), "cont_flag": "1"})
        frame = candles_to_frame(resp.get("candles") or [], tf, to_ns)
        good = valid_candles(frame)
        if not good.all():
            log.warning("fyers backfill of %s: %d candle(s) dropped (NaN, non-positive or inconsistent OHLC, "
                        "negative volume): %s", symbol, int((~good).sum()), list(frame.index[~good][:3]))
        ns = frame.index.as_unit("ns").asi8
        for i, t in enumerate(ns):
            if from_ns <= t < to_ns and good[i]:
                end = bar_end(int(t), tf)
                r = frame.iloc[i]
                out.append(Bar(symbol=symbol, ts=int(t), end=end, open=float(r["open"]), high=float(r["high"]),
                               low=float(r["low"]), close=float(r["close"]), volume=float(r["volume"]),
                               timeframe=tf, last_of_session=last_of_session_by_clock(end)))
    return out


# ------------------------------------------------------------------------------ live feed

class TickClock:
    """A clock that follows the exchange's time as the ticks report it (never backwards), plus the wall
    time elapsed since the last tick; for replays through the simulator, whose prints carry the
    sample's historical times."""

    def __init__(self, start_ns: int | None = None) -> None:
        self._lock = threading.Lock()
        self._tick_ns: int | None = None if start_ns is None else int(start_ns)
        self._wall_at = time.monotonic()

    def observe(self, ns: int) -> None:
        with self._lock:
            if self._tick_ns is None or ns > self._tick_ns:
                self._tick_ns = int(ns)
                self._wall_at = time.monotonic()

    def now_ns(self) -> int:
        with self._lock:
            if self._tick_ns is None:
                return time.time_ns()
            return self._tick_ns + int((time.monotonic() - self._wall_at) * NS_PER_SECOND)


def in_session(ns: int) -> bool:
    """Inside 09:15-15:30 IST of an NSE trading day (``tradebot.core.nse_calendar``: holidays included)."""
    day = (int(ns) + IST_OFFSET_NS) // DAY_NS
    open_, close = session_bounds_ns(day)
    return open_ <= ns < close and is_trading_day_ns(ns)


class FyersDataFeed(QueueFeed):
    """The Fyers data socket as a ``DataFeed`` of ``Tick``s (and backfilled ``Bar``s); see the module docstring.

    ``socket_factory(symbols, on_tick=, on_error=, on_connected=)`` builds the socket (default: the SDK's,
    ``sockets.DataSocket``); ``rest`` serves the backfill (None: no backfill).
    """

    def __init__(self, socket_factory: Callable[..., Any], *, timeframe: str, rest: FyersRest | None = None,
                 clock: Clock | None = None, heartbeat_s: float = 1.0, stall_s: float = 30.0,
                 watchdog_s: float = 1.0, market_open: Callable[[int], bool] = in_session,
                 on_tick: Callable[[Tick], None] | None = None, backfill_on_start: bool = True):
        super().__init__(clock=clock, heartbeat_s=heartbeat_s, maxsize=0)
        self._factory = socket_factory
        self.timeframe = canonical_timeframe(timeframe)
        self.rest = rest
        self.stall_s = float(stall_s)
        self.watchdog_s = float(watchdog_s)
        self.market_open = market_open
        self.on_tick = on_tick
        self.backfill_on_start = backfill_on_start
        self._after: dict[str, int] = {}
        self._lock = threading.Lock()
        self._socket: Any = None
        self._watchdog: threading.Thread | None = None
        self._last_tick_wall = time.monotonic()
        self._last_tick_ns: dict[str, int] = {}
        self._day_volume: dict[str, float] = {}
        self._holding = False
        self._held: list[Tick] = []
        self._gap_from: dict[str, int] | None = None
        self._restarted_at = 0.0
        self.reconnects = 0
        self.backfilled = 0
        self.backfills: list[tuple[str, int, int, int]] = []  # (symbol, from, to, bars queued) per backfill
        self.ticks = 0
        self.errors: list[Any] = []

    def __repr__(self) -> str:
        return f"FyersDataFeed(symbols={self.symbols!r}, timeframe={self.timeframe!r})"

    # ------------------------------------------------------------------------ DataFeed
    def subscribe(self, symbols: Sequence[str], after: Mapping[str, int] | None = None) -> None:
        for s in symbols:
            validate_symbol(s)
        self.symbols = tuple(symbols)
        self._after = {k: int(v) for k, v in (after or {}).items()}
        self._start_socket()
        if self.backfill_on_start and self.rest is not None and self._after:
            now = self.clock.now_ns()
            self._backfill({s: t + 1 for s, t in self._after.items() if s in self.symbols}, now)
        if self._watchdog is None:
            self._watchdog = threading.Thread(target=self._watch, name="fyers-feed-watchdog", daemon=True)
            self._watchdog.start()

    def close(self) -> None:
        super().close()
        with self._lock:
            sock, self._socket = self._socket, None
        if sock is not None:
            sock.stop(wait=False)

    # ---------------------------------------------------------------------- internals
    def _start_socket(self) -> None:
        sock = self._factory(list(self.symbols), on_tick=self._on_message, on_error=self._on_error,
                             on_connected=None)
        with self._lock:
            self._socket = sock
        self._last_tick_wall = time.monotonic()
        sock.start()  # connects (the SDK waits 2 s) and subscribes
        self._last_tick_wall = time.monotonic()  # the stall clock starts once the socket is up

    def _on_error(self, msg: Any) -> None:
        self.errors.append(msg)

    def to_tick(self, msg: Mapping[str, Any]) -> Tick | None:
        """One socket message -> a ``Tick`` (None for one that is not a print of a subscribed symbol)."""
        sym = str(msg.get("symbol") or "")
        price = msg.get("ltp")
        if sym not in self.symbols or not isinstance(price, (int, float)) or not price > 0:
            return None
        t = msg.get("last_traded_time") or msg.get("exch_feed_time")
        ts = int(t) * NS_PER_SECOND if isinstance(t, (int, float)) and t > 0 else self.clock.now_ns()
        vol = 0.0
        day_vol = msg.get("vol_traded_today")
        if isinstance(day_vol, (int, float)):
            prev = self._day_volume.get(sym)
            if prev is not None and day_vol >= prev:
                vol = float(day_vol - prev)
            elif prev is None:
                q = msg.get("last_traded_qty")
                vol = float(q) if isinstance(q, (int, float)) and q > 0 else 0.0
            self._day_volume[sym] = float(day_vol)
        return Tick(symbol=sym, ts=ts, price=float(price), volume=vol)

    def _on_message(self, msg: Mapping[str, Any]) -> None:
        tick = self.to_tick(msg)
        if tick is None:
            return
        self._last_tick_wall = time.monotonic()
        self.ticks += 1
        observe = getattr(self.clock, "observe", None)
        if observe is not None:
            observe(tick.ts)
        self._last_tick_ns[tick.symbol] = max(tick.ts, self._last_tick_ns.get(tick.symbol, 0))
        if self.on_tick is not None:
            self.on_tick(tick)
        with self._lock:
            if self._holding:
                self._held.append(tick)
                return
            if self._gap_from is not None and time.monotonic() - self._restarted_at > 2.0:
                self._gap_from = None  # prints flow again after the reconnect: the gap is closed
        self._q.put(tick)

    def _watch(self) -> None:
        while not self._closed.wait(self.watchdog_s):
            idle = time.monotonic() - self._last_tick_wall
            if idle < self.stall_s or not self.market_open(self.clock.now_ns()):
                continue
            log.warning("fyers data feed: no tick for %.0f s; reconnecting and backfilling", idle)
            try:
                self.restart(backfill=True)
            except Exception:  # keep watching: the next stall tries again
                log.exception("fyers data feed: reconnect failed")
                self._last_tick_wall = time.monotonic()

    def restart(self, backfill: bool = True) -> None:
        """Close the socket, open a new one (which re-subscribes), and backfill the missing bars."""
        now = self.clock.now_ns()
        with self._lock:
            # the gap starts at the bar of the last print before the stall; it stays there over repeated
            # reconnects (their snapshots carry the current time) until prints flow again
            if self._gap_from is None:
                self._gap_from = {s: bar_start_for(t, self.timeframe) or t for s, t in self._last_tick_ns.items()}
            since = dict(self._gap_from)
            old, self._socket = self._socket, None
            self._holding = backfill and self.rest is not None
        if old is not None:
            old.stop(wait=False)
        self.reconnects += 1
        try:
            self._start_socket()
            if backfill and self.rest is not None:
                self._backfill(since, now)
        finally:
            with self._lock:
                self._restarted_at = time.monotonic()  # the new socket's snapshot must not close the gap
                held, self._held, self._holding = self._held, [], False
                for t in held:
                    self._q.put(t)

    def _backfill(self, since: Mapping[str, int], now: int) -> None:
        """Queue the closed bars from ``since[symbol]`` to ``now`` (the loop skips those it has done)."""
        for sym, t0 in since.items():
            try:
                bars = history_bars(self.rest, sym, self.timeframe, t0, now)
            except Exception as err:  # a failed backfill leaves the gap; the risk engine sees stale data
                log.warning("fyers data feed: backfill of %s failed: %s", sym, err)
                continue
            queued = [b for b in bars if b.end <= now]
            for b in queued:
                self._q.put(b)
            self.backfilled += len(queued)
            self.backfills.append((sym, int(t0), int(now), len(queued)))


def default_socket_factory(token: Any, *, litemode: bool = False, endpoints: Any = None,
                           log_path: Any = None) -> Callable[..., Any]:
    """The SDK data socket for an ``auth.FyersToken`` (what ``FyersDataFeed`` uses in production)."""
    from tradebot.live.adapters.fyers.sockets import DataSocket

    def make(symbols: Sequence[str], **kw: Any) -> DataSocket:
        return DataSocket(token.socket_token(), symbols, litemode=litemode, endpoints=endpoints, log_path=log_path,
                          **kw)

    return make


__all__ = ["fetch_history", "history_bars", "FyersDataFeed", "TickClock", "resolution", "chunks",
           "candles_to_frame", "FetchReport", "default_socket_factory"]
