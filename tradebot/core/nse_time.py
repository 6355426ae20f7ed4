"""The NSE cash/F&O regular session: 09:15–15:30 IST, 375 minutes, bars labelled by their start."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

IST = "Asia/Kolkata"
SESSION_OPEN_MINUTE = 9 * 60 + 15  # minutes after midnight IST
SESSION_CLOSE_MINUTE = 15 * 60 + 30
SESSION_MINUTES = SESSION_CLOSE_MINUTE - SESSION_OPEN_MINUTE  # 375
SESSIONS_PER_YEAR = 252

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
