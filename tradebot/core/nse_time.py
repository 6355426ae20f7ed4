"""The NSE cash/F&O regular session: 09:15–15:30 IST, 375 minutes, bars labelled by their start.

Two forms of the same arithmetic: on pandas indexes (``session_day``, ``minute_of_day``, ...) for bar
series, and on epoch nanoseconds (``ist_day``, ``session_bounds_ns``, ``bar_end``, ...) for one live
bar or tick at a time. IST has no daylight saving, so a fixed offset is exact.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

import numpy as np
import pandas as pd

IST = "Asia/Kolkata"
SESSION_OPEN_MINUTE = 9 * 60 + 15  # minutes after midnight IST
SESSION_CLOSE_MINUTE = 15 * 60 + 30
SESSION_MINUTES = SESSION_CLOSE_MINUTE - SESSION_OPEN_MINUTE  # 375
SESSIONS_PER_YEAR = 252

IST_OFFSET_NS = (5 * 60 + 30) * 60 * 1_000_000_000  # IST = UTC + 05:30
DAY_NS = 86_400 * 1_000_000_000
MINUTE_NS = 60 * 1_000_000_000

_TIMEFRAME_RE = re.compile(r"^(\d+)(m|h|d)$")


def timeframe_minutes(timeframe: str) -> int:
    """'5m' -> 5, '1h' -> 60, '1d' -> 375 (one whole session)."""
    m = _TIMEFRAME_RE.match(timeframe)
    if not m:
        raise ValueError(f"unknown timeframe {timeframe!r} (use e.g. 1m, 5m, 15m, 1h, 1d)")
    n, unit = int(m.group(1)), m.group(2)
    if unit == "m":
        return n
    if unit == "h":
        return 60 * n
    if n != 1:
        raise ValueError(f"unsupported timeframe {timeframe!r}: only 1d for daily bars")
    return SESSION_MINUTES


def is_intraday(timeframe: str) -> bool:
    return not timeframe.endswith("d")


def bars_per_session(timeframe: str) -> int:
    """Number of bars in a full session (the last intraday bar may be shorter, e.g. 15:15–15:30 for 1h)."""
    if not is_intraday(timeframe):
        return 1
    return math.ceil(SESSION_MINUTES / timeframe_minutes(timeframe))


def bars_per_year(timeframe: str) -> float:
    """Annualisation factor for returns sampled at this bar size (252 sessions of 375 minutes)."""
    return bars_per_session(timeframe) * SESSIONS_PER_YEAR


def minute_of_day(index: pd.DatetimeIndex) -> np.ndarray:
    """Minutes after midnight IST of each timestamp."""
    local = index.tz_convert(IST)
    return (local.hour * 60 + local.minute).to_numpy(dtype=np.int64)


def session_day(index: pd.DatetimeIndex) -> np.ndarray:
    """An integer per bar identifying its trading session (days since epoch, IST calendar date)."""
    local = index.tz_convert(IST)
    return (local.normalize().tz_localize(None).to_numpy().astype("datetime64[D]").astype(np.int64))


def minutes_into_session(index: pd.DatetimeIndex) -> np.ndarray:
    return minute_of_day(index) - SESSION_OPEN_MINUTE


def in_session(index: pd.DatetimeIndex) -> np.ndarray:
    m = minute_of_day(index)
    return (m >= SESSION_OPEN_MINUTE) & (m < SESSION_CLOSE_MINUTE)


def detect_timeframe(index: pd.DatetimeIndex) -> str:
    """The bar size of a sorted index: the most common gap between bars of the same session."""
    if len(index) < 2:
        return "1d"
    # asi8 is in the index's own unit (pandas 3 parses strings to microseconds): work in ns.
    ns = index.as_unit("ns").asi8
    diffs = np.diff(ns)
    same_day = np.diff(session_day(index)) == 0
    intraday = diffs[same_day & (diffs > 0)]
    if len(intraday) >= max(1, len(diffs) // 10):
        minutes = int(round(pd.Series(intraday).mode().iloc[0] / 60e9))
        if minutes % 60 == 0 and minutes >= 60:
            return f"{minutes // 60}h"
        return f"{max(minutes, 1)}m"
    return "1d"


# ---- one timestamp at a time: epoch nanoseconds ------------------------------------------------

def ist_day(ns: int) -> int:
    """Days since the epoch of the IST calendar date of ``ns`` (a session id, as ``session_day``)."""
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
    """Minutes after midnight of an ``HH:MM`` time."""
    hh, mm = text.split(":")
    return int(hh) * 60 + int(mm)


@lru_cache(maxsize=32)
def bar_ns(timeframe: str) -> int:
    """Length of a bar of ``timeframe`` in ns (a daily bar: one 375-minute session)."""
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
