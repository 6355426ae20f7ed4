"""The simulated market: bar files replayed as ticks on a simulated clock, and history answered from them.

Ticks of a bar (deterministic, four per bar): open, then the extreme nearer to the open in the bar's
direction (low first for a bar that closes at or above its open, high first otherwise), then the other
extreme, then the close; the bar's volume is split evenly (the remainder goes to the close tick). An
intraday bar's ticks are spread over its span (a 1-minute bar ticks at :00, :15, :30, :45); a daily
bar's ticks over the 09:15-15:30 session. Ticks of all symbols are merged into one timeline ordered by
time (then by the order the files were given).

The clock is the time of the last tick emitted. Everything before the start bar counts as already
traded at start (it sets last price, day open/high/low, previous close). History answers only bars
that have started by the clock (the current bar partially, as Fyers does), unless
``history_sees_future`` is set.
"""

from __future__ import annotations

import bisect
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tradebot.live.adapters.fyers.simulator.symbols import Instrument, make_instrument

IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
TICKS_PER_BAR = 4
DAY_S = 86_400
SESSION_OPEN_S = 9 * 3600 + 15 * 60  # 09:15 IST, seconds after midnight
SESSION_CLOSE_S = 15 * 3600 + 30 * 60  # 15:30 IST


class HistoryError(ValueError):
    """A history request the API refuses (code -50 / -300); ``code`` is the Fyers code."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class SimTick:
    symbol: str
    ts: int  # epoch seconds
    price: float
    volume: int
    bar: int  # index of the bar in its symbol's series
    part: int  # 0 open, 1 and 2 the extremes, 3 close


@dataclass
class Quote:
    """The running market state of one symbol (what quotes and the data socket show)."""

    ltp: float
    prev_close: float
    open: float
    high: float
    low: float
    volume: int = 0  # traded today
    ltq: int = 0
    ltt: int = 0  # epoch seconds of the last trade
    turnover: float = 0.0
    year_high: float = 0.0
    year_low: float = 0.0
    day: int = -1  # IST day number of the last tick

    @property
    def atp(self) -> float:
        return self.turnover / self.volume if self.volume else self.ltp

    @property
    def change(self) -> float:
        return round(self.ltp - self.prev_close, 4)

    @property
    def change_pct(self) -> float:
        return round(self.change / self.prev_close * 100, 4) if self.prev_close else 0.0


def ist_day(ts: int) -> int:
    return (ts + 19_800) // DAY_S


def ist_midnight(ts: int) -> int:
    return ist_day(ts) * DAY_S - 19_800


@dataclass
class Series:
    instrument: Instrument
    ts: np.ndarray  # bar starts, epoch seconds (int64)
    o: np.ndarray
    h: np.ndarray
    l: np.ndarray
    c: np.ndarray
    v: np.ndarray
    bar_s: int  # bar length in seconds (86400 for daily bars)
    # progress: index of the bar being traded and how many of its ticks have been emitted
    bar: int = -1
    part: int = TICKS_PER_BAR - 1
    hi_so_far: float = 0.0
    lo_so_far: float = 0.0
    vol_so_far: int = 0

    @property
    def daily(self) -> bool:
        return self.bar_s >= DAY_S

    def ticks(self, i: int) -> list[SimTick]:
        o, h, l, c = (float(x) for x in (self.o[i], self.h[i], self.l[i], self.c[i]))
        prices = (o, l, h, c) if c >= o else (o, h, l, c)
        vol = int(self.v[i])
        vols = [vol // TICKS_PER_BAR] * TICKS_PER_BAR
        vols[-1] += vol - sum(vols)
        start, span = int(self.ts[i]), self.bar_s
        if self.daily:
            start, span = ist_midnight(start) + SESSION_OPEN_S, SESSION_CLOSE_S - SESSION_OPEN_S
        step = span // TICKS_PER_BAR
        return [SimTick(self.instrument.symbol, start + k * step, prices[k], vols[k], i, k)
                for k in range(TICKS_PER_BAR)]


def _series_from(item: Any) -> Series:
    from tradebot.features.bars import Bars, load_bars

    if isinstance(item, (str, Path)):
        bars = load_bars(item)
    elif isinstance(item, Bars):
        bars = item
    elif isinstance(item, tuple) and len(item) == 2:
        symbol, source = item
        bars = load_bars(source, symbol=symbol) if isinstance(source, (str, Path)) else source
        bars = Bars(frame=bars.frame, symbol=symbol, timeframe=bars.timeframe)
    else:
        raise TypeError(f"data item {item!r}: give a bar file path, a Bars, or (symbol, path-or-Bars)")
    if not bars.symbol:
        raise ValueError("bars without a symbol: name the file like NSE_SBIN-EQ_1m.csv.gz or pass (symbol, path)")
    frame = bars.frame
    ts = (frame.index.as_unit("s").asi8).astype(np.int64)
    diffs = np.diff(ts)
    bar_s = int(np.min(diffs[diffs > 0])) if len(diffs) else 60
    if bar_s >= DAY_S:
        bar_s = DAY_S
    return Series(instrument=make_instrument(bars.symbol), ts=ts,
                  o=frame["open"].to_numpy(), h=frame["high"].to_numpy(), l=frame["low"].to_numpy(),
                  c=frame["close"].to_numpy(), v=frame["volume"].to_numpy().round().astype(np.int64), bar_s=bar_s)


def parse_start(start: Any) -> int | None:
    if start is None:
        return None
    if isinstance(start, (int, np.integer)):
        return int(start)
    ts = pd.Timestamp(start)
    if ts.tzinfo is None:
        ts = ts.tz_localize(IST)
    return int(ts.timestamp())


class Market:
    """Bar series replayed as ticks. Not thread-safe: the server calls it from its event loop only."""

    def __init__(self, data: list[Any], start: Any = "last_session", history_sees_future: bool = False):
        if not data:
            raise ValueError("the simulator needs at least one bar series")
        self.series: dict[str, Series] = {}
        for item in data:
            s = _series_from(item)
            if s.instrument.symbol in self.series:
                raise ValueError(f"{s.instrument.symbol}: given twice")
            self.series[s.instrument.symbol] = s
        self.history_sees_future = history_sees_future
        timeline: list[SimTick] = []
        for s in self.series.values():
            for i in range(len(s.ts)):
                timeline.extend(s.ticks(i))
        order = {sym: n for n, sym in enumerate(self.series)}
        timeline.sort(key=lambda t: (t.ts, order[t.symbol]))
        self.timeline = timeline
        self._times = [t.ts for t in timeline]
        self.quotes: dict[str, Quote] = {}
        for sym, s in self.series.items():
            first = float(s.o[0])
            self.quotes[sym] = Quote(ltp=first, prev_close=first, open=first, high=first, low=first,
                                     year_high=first, year_low=first)
        self.pos = 0
        self.start_ts = self._start_ts(start)
        while self.pos < len(self.timeline) and self.timeline[self.pos].ts < self.start_ts:
            self.step()
        self.now = self.timeline[self.pos - 1].ts if self.pos else self.start_ts

    def _start_ts(self, start: Any) -> int:
        if start == "first" or start is None:
            return self._times[0]
        if start == "last_session":
            last_day = ist_day(self._times[-1])
            return next(t for t in self._times if ist_day(t) == last_day)
        ts = parse_start(start)
        if ts > self._times[-1]:
            raise ValueError(f"start {start} is after the last bar of the data")
        return ts

    # ------------------------------------------------------------------ clock

    @property
    def finished(self) -> bool:
        return self.pos >= len(self.timeline)

    def peek(self) -> SimTick | None:
        return None if self.finished else self.timeline[self.pos]

    def step(self) -> SimTick | None:
        """Emit the next tick (updates the quote and bar progress); None at the end of the data."""
        if self.finished:
            return None
        tick = self.timeline[self.pos]
        self.pos += 1
        self.now = tick.ts
        s = self.series[tick.symbol]
        q = self.quotes[tick.symbol]
        day = ist_day(tick.ts)
        if day != q.day:
            if q.day != -1:
                q.prev_close = q.ltp
            q.open = q.high = q.low = tick.price
            q.volume, q.turnover, q.day = 0, 0.0, day
        if tick.part == 0:
            s.bar, s.hi_so_far, s.lo_so_far, s.vol_so_far = tick.bar, tick.price, tick.price, 0
        s.part = tick.part
        s.hi_so_far, s.lo_so_far = max(s.hi_so_far, tick.price), min(s.lo_so_far, tick.price)
        s.vol_so_far += tick.volume
        q.ltp = tick.price
        q.high, q.low = max(q.high, tick.price), min(q.low, tick.price)
        q.year_high, q.year_low = max(q.year_high, tick.price), min(q.year_low, tick.price)
        q.volume += tick.volume
        q.turnover += tick.volume * tick.price
        q.ltq, q.ltt = tick.volume, tick.ts
        return tick

    def time_of_next(self) -> int | None:
        tick = self.peek()
        return None if tick is None else tick.ts

    def ticks_until(self, ts: int) -> int:
        """How many ticks remain until (and including) time ``ts``."""
        return max(0, bisect.bisect_right(self._times, ts) - self.pos)

    def bar_seconds(self) -> int:
        return min(s.bar_s for s in self.series.values())

    def session_open(self) -> bool:
        secs = (self.now + 19_800) % DAY_S
        return SESSION_OPEN_S <= secs < SESSION_CLOSE_S and not self.finished

    # ------------------------------------------------------------------ lookups

    def instrument(self, symbol: str) -> Instrument | None:
        s = self.series.get(symbol)
        return s.instrument if s else None

    def instruments(self) -> list[Instrument]:
        return [s.instrument for s in self.series.values()]

    def by_topic(self) -> dict[str, tuple[Instrument, str]]:
        out: dict[str, tuple[Instrument, str]] = {}
        for s in self.series.values():
            for topic, kind in s.instrument.topics().items():
                out[topic] = (s.instrument, kind)
        return out

    # ------------------------------------------------------------------ history

    def visible_bars(self, symbol: str) -> pd.DataFrame:
        """Bars that have started by the clock (the current one as traded so far), epoch-second index."""
        s = self.series[symbol]
        n = len(s.ts) if self.history_sees_future else s.bar + 1
        df = pd.DataFrame({"o": s.o[:n], "h": s.h[:n], "l": s.l[:n], "c": s.c[:n], "v": s.v[:n].astype(float)},
                          index=s.ts[:n])
        if not self.history_sees_future and n > 0 and s.part < TICKS_PER_BAR - 1:
            q = self.quotes[symbol]
            df.iloc[-1] = [s.o[n - 1], s.hi_so_far, s.lo_so_far, q.ltp, float(s.vol_so_far)]
        return df

    def history(self, symbol: str, resolution: str, range_from: int, range_to: int,
                oi_flag: bool = False) -> list[list[float]]:
        s = self.series[symbol]
        res = resolution.upper()
        df = self.visible_bars(symbol)
        if res in ("D", "1D", "1W", "1M"):
            key = np.array([ist_midnight(int(t)) for t in df.index], dtype=np.int64)
            if res == "1W":
                key = np.array([k - ((ist_day(k) + 3) % 7) * DAY_S for k in key], dtype=np.int64)  # Monday
            elif res == "1M":
                key = np.array([int(pd.Timestamp(k, unit="s", tz=IST).replace(day=1).timestamp()) for k in key],
                               dtype=np.int64)
        else:
            if res.endswith("S"):
                raise HistoryError(-50, f"Invalid input: the simulator has no seconds data for {symbol}")
            minutes = int(res)
            width = minutes * 60
            if s.daily:
                raise HistoryError(-50, f"Invalid input: the simulator has only daily bars for {symbol}")
            if width < s.bar_s or width % s.bar_s:
                raise HistoryError(-50, f"Invalid input: resolution {resolution} is not a multiple of the "
                                        f"simulator's {s.bar_s // 60}-minute bars for {symbol}")
            idx = df.index.to_numpy(dtype=np.int64)
            anchor = np.array([ist_midnight(int(t)) + SESSION_OPEN_S for t in idx], dtype=np.int64)
            key = anchor + (idx - anchor) // width * width
        df = df.assign(k=key)
        df = df[(df["k"] >= range_from) & (df["k"] <= range_to)]
        if df.empty:
            return []
        agg = df.groupby("k", sort=True).agg(o=("o", "first"), h=("h", "max"), l=("l", "min"), c=("c", "last"),
                                             v=("v", "sum"))
        out = []
        for k, row in agg.iterrows():
            candle = [int(k), _num(row.o), _num(row.h), _num(row.l), _num(row.c), int(row.v)]
            if oi_flag:
                candle.append(0)
            out.append(candle)
        return out

    def state(self) -> dict[str, Any]:
        return {"now": self.now, "now_ist": dt.datetime.fromtimestamp(self.now, IST).isoformat(),
                "tick": self.pos, "ticks_total": len(self.timeline), "finished": self.finished,
                "ltp": {sym: q.ltp for sym, q in self.quotes.items()}}


def _num(x: float) -> float:
    return round(float(x), 2)

