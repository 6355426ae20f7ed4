"""NSE session arithmetic on epoch nanoseconds, and one bar as a row of the fill engine's market data.

``engine_row`` runs the engine's own per-bar kernel (the one ``tradebot.envs.engine.market_data`` runs over a
whole series), so the square-off flag and the session time left of a live bar are computed exactly
as the backtester and the env compute them; only the last-of-session flag comes from the bar (a live
feed knows it from the clock, a replay from its data).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from tradebot.envs.engine import (
    D_FLAGS,
    FLAG_LAST_OF_SESSION,
    N_DATA,
    EngineConfig,
    _fill_market,  # the engine's per-bar market-data kernel (market_data's loop body)
)
from tradebot.core.nse_time import SESSION_CLOSE_MINUTE, SESSION_OPEN_MINUTE, is_intraday, timeframe_minutes
from tradebot.live.ports import Bar

IST_OFFSET_NS = (5 * 60 + 30) * 60 * 1_000_000_000
DAY_NS = 86_400 * 1_000_000_000
MINUTE_NS = 60 * 1_000_000_000


def ist_day(ns: int) -> int:
    """Days since the epoch of the IST calendar date of ``ns`` (a session id)."""
    return (int(ns) + IST_OFFSET_NS) // DAY_NS


def ist_minute(ns: int) -> float:
    """Minutes after IST midnight, with the fraction of a minute."""
    return ((int(ns) + IST_OFFSET_NS) % DAY_NS) / MINUTE_NS


def day_start_ns(day: int) -> int:
    """Epoch ns of IST midnight of session id ``day``."""
    return int(day) * DAY_NS - IST_OFFSET_NS


def session_bounds_ns(day: int) -> tuple[int, int]:
    """(open, close) of the NSE session of that IST day, epoch ns."""
    midnight = day_start_ns(day)
    return midnight + SESSION_OPEN_MINUTE * MINUTE_NS, midnight + SESSION_CLOSE_MINUTE * MINUTE_NS


def hhmm_minute(text: str) -> int:
    hh, mm = text.split(":")
    return int(hh) * 60 + int(mm)


@lru_cache(maxsize=32)
def bar_ns(timeframe: str) -> int:
    return timeframe_minutes(timeframe) * MINUTE_NS


def bar_end(ts: int, timeframe: str) -> int:
    """End (exclusive) of the bar starting at ``ts``: start + bar size, cut at the session close for
    intraday bars (the 15:15 hourly bar ends at 15:30); a daily bar ends at its session's close."""
    day = ist_day(ts)
    _, close = session_bounds_ns(day)
    if not is_intraday(timeframe):
        return close
    return min(int(ts) + bar_ns(timeframe), close)


def bar_start_for(ts: int, timeframe: str) -> int | None:
    """Label of the session-aligned bar containing ``ts``: its start for intraday bars (from 09:15 IST),
    IST midnight of the trading date for daily bars (the daily files' convention); None outside the session."""
    day = ist_day(ts)
    open_, close = session_bounds_ns(day)
    if not open_ <= ts < close:
        return None
    if not is_intraday(timeframe):
        return day_start_ns(day)
    size = bar_ns(timeframe)
    return open_ + ((int(ts) - open_) // size) * size


def last_of_session_by_clock(end: int) -> bool:
    """A bar is the last of its session when it ends at (or after) the 15:30 close."""
    return end >= session_bounds_ns(ist_day(end - 1))[1]


def engine_row(bar: Bar, atr: float, config: EngineConfig) -> np.ndarray:
    """The engine's market-data row (``tradebot.envs.engine.D_*`` columns) of one bar under ``config``."""
    data = np.empty((1, N_DATA), dtype=np.float64)
    intraday = is_intraday(bar.timeframe)
    sq = config.square_off_minute if intraday else None
    horizon = sq if sq is not None else SESSION_CLOSE_MINUTE
    o, h, lo, c, a = (np.array([v], dtype=np.float64) for v in (bar.open, bar.high, bar.low, bar.close,
                                                              atr if math.isfinite(atr) else math.nan))
    _fill_market(data, o, h, lo, c, a, np.array([bar.ts], dtype=np.int64), -1 if sq is None else sq, intraday,
                 timeframe_minutes(bar.timeframe) if intraday else 0, horizon)
    flags = int(data[0, D_FLAGS]) & ~FLAG_LAST_OF_SESSION
    if bar.last_of_session:
        flags |= FLAG_LAST_OF_SESSION
    data[0, D_FLAGS] = flags
    return data[0]
