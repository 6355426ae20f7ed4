"""Ticks to bars aligned to the NSE session, as the bar files and the feature pipeline expect them.

Bars start at 09:15 IST and every bar size after it (5m: 09:15, 09:20, ...; 1h: 09:15, ..., 15:15 with
the last one cut at the 15:30 close; 1d: one bar per session) and are labelled by their start.
A bar closes on the first tick that belongs to a later bar, or, when no such tick comes, on the
timer: ``on_time(now)`` closes every bar whose end + ``grace_s`` has passed (the grace lets late
prints of the bar's last second arrive). Ticks outside 09:15-15:30 are ignored; a tick for a bar
that has already closed is dropped and counted (``late_ticks``). A bar with no ticks is not made
(as in the bar files: no empty bars). A bar ending at 15:30 is flagged ``last_of_session``.

``on_tick`` / ``on_time`` return the bars they closed, oldest first; the loop hands each one to the
symbol's incremental feature stream.
"""

from __future__ import annotations

from dataclasses import dataclass

from tradebot.core.nse_time import bar_end, bar_start_for, last_of_session_by_clock
from tradebot.live.ports import NS_PER_SECOND, Bar, Tick


@dataclass
class _Partial:
    symbol: str
    start: int
    end: int
    open: float
    high: float
    low: float
    close: float
    volume: float

    def freeze(self, timeframe: str) -> Bar:
        return Bar(symbol=self.symbol, ts=self.start, end=self.end, open=self.open, high=self.high, low=self.low,
                   close=self.close, volume=self.volume, timeframe=timeframe,
                   last_of_session=last_of_session_by_clock(self.end))


class BarBuilder:
    """Session-aligned bars of ``timeframe`` from ticks, per symbol."""

    def __init__(self, timeframe: str, grace_s: float = 2.0):
        bar_end(0, timeframe)  # validates the timeframe
        self.timeframe = timeframe
        self.grace_ns = int(grace_s * NS_PER_SECOND)
        self._open: dict[str, _Partial] = {}
        self._last_closed: dict[str, int] = {}
        self.late_ticks = 0
        self.outside_ticks = 0

    def on_tick(self, tick: Tick) -> list[Bar]:
        """Add one print; returns the bar it closed (when it opens a later bar), else nothing."""
        start = bar_start_for(tick.ts, self.timeframe)
        if start is None:
            self.outside_ticks += 1
            return []
        if not (tick.price > 0.0) or tick.volume < 0.0:
            raise ValueError(f"bad tick for {tick.symbol}: price {tick.price}, volume {tick.volume}")
        out: list[Bar] = []
        cur = self._open.get(tick.symbol)
        if cur is not None and start < cur.start or start <= self._last_closed.get(tick.symbol, -1):
            self.late_ticks += 1
            return out
        if cur is not None and start > cur.start:
            out.append(self._close(tick.symbol))
            cur = None
        if cur is None:
            self._open[tick.symbol] = _Partial(tick.symbol, start, bar_end(start, self.timeframe), tick.price,
                                               tick.price, tick.price, tick.price, float(tick.volume))
        else:
            cur.high = max(cur.high, tick.price)
            cur.low = min(cur.low, tick.price)
            cur.close = tick.price
            cur.volume += float(tick.volume)
        return out

    def mark_closed(self, symbol: str, start_ns: int) -> None:
        """Bars of ``symbol`` starting at or before ``start_ns`` are closed already (the history or the
        journal has them): their ticks, such as a subscription's snapshot of the last print, are late."""
        self._last_closed[symbol] = max(self._last_closed.get(symbol, -1), int(start_ns))

    def on_time(self, now_ns: int) -> list[Bar]:
        """Close every bar whose end + grace is at or before ``now_ns`` (oldest first)."""
        due = sorted((p.end, sym) for sym, p in self._open.items() if p.end + self.grace_ns <= now_ns)
        return [self._close(sym) for _, sym in due]

    def pending(self, symbol: str) -> Bar | None:
        """The bar being built for ``symbol`` (not closed), or None."""
        p = self._open.get(symbol)
        return p.freeze(self.timeframe) if p else None

    def _close(self, symbol: str) -> Bar:
        p = self._open.pop(symbol)
        self._last_closed[symbol] = p.start
        return p.freeze(self.timeframe)
