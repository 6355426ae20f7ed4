"""Data feeds: a bar file replayed as a live feed (``ReplayFeed``), and ``QueueFeed``, the thread-based
base of real-time feeds (a websocket callback pushes ticks or bars; the loop iterates).

``ReplayFeed`` emits each bar when it closes on a simulated clock (the clock reads the bar's end).
``speed=None`` replays as fast as the consumer takes the bars; ``speed=k`` sleeps so that k seconds of
market time pass per wall second, with the time the market is closed (nights, weekends) skipped.
Several symbols are merged by bar end.

Session ends: with ``session_ends="data"`` (default) a bar is the last of its session when the data's
next bar is on another day, which is what the backtester assumes (``tradebot.envs.engine.market_data``); a
replay therefore fills exactly as ``run_backtest`` does, even on a day the exchange closed early.
``"clock"`` uses only the clock (the bar ends at 15:30), as a live feed must. The replay's last bar is
flagged ``final`` (the paper broker then closes positions at its close, as the backtester does at
the end of its data).
"""

from __future__ import annotations

import heapq
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Literal

import numpy as np

from tradebot.features.bars import Bars
from tradebot.core.nse_time import DAY_NS, IST_OFFSET_NS, bar_end, last_of_session_by_clock
from tradebot.live.ports import NS_PER_SECOND, Bar, Clock, DataFeed, FeedEvent, Heartbeat, SimClock, Tick, WallClock
from tradebot.core.errors import UserInputError


class ReplayFeed(DataFeed):
    """Replays ``Bars`` (one series, or a mapping symbol -> series) as a live bar feed."""

    def __init__(self, bars: Bars | Mapping[str, Bars], *, speed: float | None = None,
                 session_ends: Literal["data", "clock"] = "data", sleep: Callable[[float], None] = time.sleep):
        if isinstance(bars, Bars):
            if not bars.symbol:
                raise UserInputError("replay bars need a symbol (name the file like NSE_SBIN-EQ_5m.csv.gz "
                                     "or pass symbol= to load_bars)")
            bars = {bars.symbol: bars}
        if not bars:
            raise UserInputError("nothing to replay: no bars given")
        frames = list(bars.values())
        if len({b.timeframe for b in frames}) != 1:
            raise UserInputError("replayed symbols must share one bar size; got "
                                 + ", ".join(f"{s}: {b.timeframe}" for s, b in bars.items()))
        if speed is not None and not speed > 0:
            raise UserInputError(f"replay speed must be > 0 (or None for as fast as possible), got {speed}")
        if session_ends not in ("data", "clock"):
            raise UserInputError(f"session_ends must be 'data' or 'clock', got {session_ends!r}")
        self.bars = dict(bars)
        self.timeframe = frames[0].timeframe
        self.speed = speed
        self.session_ends = session_ends
        self._sleep = sleep
        self.clock = SimClock(int(min(b.index[0].value for b in frames)))
        self.symbols: tuple[str, ...] = tuple(self.bars)
        self._after: dict[str, int] = {}
        self._closed = False

    def subscribe(self, symbols: Sequence[str], after: Mapping[str, int] | None = None) -> None:
        unknown = [s for s in symbols if s not in self.bars]
        if unknown:
            raise UserInputError(f"no replay data for {', '.join(unknown)}; have {', '.join(self.bars)}")
        self.symbols = tuple(symbols)
        self._after = {k: int(v) for k, v in (after or {}).items()}
        ends = [bar_end(int(t), self.timeframe) for s, t in self._after.items() if s in self.symbols]
        if ends:  # resuming: the replay's clock reads where the run stopped, not at the first bar of the file
            self.clock.set(max(ends))

    def close(self) -> None:
        self._closed = True

    def _series(self, symbol: str) -> Iterator[tuple[int, str, Bar]]:
        b = self.bars[symbol]
        f = b.frame
        ns = b.index.as_unit("ns").asi8
        day = (ns + IST_OFFSET_NS) // DAY_NS
        o, h, lo, c, v = (f[k].to_numpy(dtype=np.float64) for k in ("open", "high", "low", "close", "volume"))
        n = len(ns)
        start = int(np.searchsorted(ns, self._after.get(symbol, np.iinfo(np.int64).min), side="right"))
        for i in range(start, n):
            end = bar_end(int(ns[i]), self.timeframe)
            if self.session_ends == "data":
                last = i + 1 >= n or day[i + 1] != day[i]
            else:
                last = last_of_session_by_clock(end)
            yield end, symbol, Bar(symbol=symbol, ts=int(ns[i]), end=end, open=float(o[i]), high=float(h[i]),
                                   low=float(lo[i]), close=float(c[i]), volume=float(v[i]), timeframe=self.timeframe,
                                   last_of_session=bool(last), final=i == n - 1)

    def __iter__(self) -> Iterator[FeedEvent]:
        prev_end: int | None = None
        prev_day: int | None = None
        for end, _, bar in heapq.merge(*(self._series(s) for s in self.symbols), key=lambda x: (x[0], x[1])):
            if self._closed:
                return
            if self.speed is not None and prev_end is not None:
                day = (end + IST_OFFSET_NS) // DAY_NS
                # market time between the two bar ends; the closed market (nights) counts as one bar
                gap = end - prev_end if day == prev_day else bar.end - bar.ts
                if gap > 0:
                    self._sleep(gap / NS_PER_SECOND / self.speed)
            prev_end, prev_day = end, (end + IST_OFFSET_NS) // DAY_NS
            self.clock.set(end)
            yield bar


class QueueFeed(DataFeed):
    """A thread-based feed: producer threads (a websocket callback) ``push`` events; iterating
    yields them in order, and a ``Heartbeat`` every ``heartbeat_s`` on a timer, however busy the queue
    (a symbol that goes silent while another ticks must still be found stale)."""

    def __init__(self, clock: Clock | None = None, heartbeat_s: float = 1.0, maxsize: int = 100_000):
        self.clock = clock or WallClock()
        self.heartbeat_s = float(heartbeat_s)
        self._q: queue.Queue = queue.Queue(maxsize=maxsize)
        self._closed = threading.Event()
        self.symbols: tuple[str, ...] = ()

    def subscribe(self, symbols: Sequence[str], after: Mapping[str, int] | None = None) -> None:
        self.symbols = tuple(symbols)

    def push(self, event: FeedEvent) -> None:
        """Thread-safe; events of unsubscribed symbols are dropped by the consumer."""
        self._q.put(event)

    def close(self) -> None:
        self._closed.set()

    def __iter__(self) -> Iterator[FeedEvent]:
        next_beat = time.monotonic() + self.heartbeat_s
        while not (self._closed.is_set() and self._q.empty()):
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + self.heartbeat_s
                yield Heartbeat(self.clock.now_ns())
                continue
            try:
                event = self._q.get(timeout=next_beat - now)
            except queue.Empty:
                if self._closed.is_set():
                    return
                continue
            if isinstance(event, (Bar, Tick)) and self.symbols and event.symbol not in self.symbols:
                continue
            yield event
