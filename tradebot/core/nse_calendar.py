"""NSE trading days: which dates the exchange is open, from a maintained holiday list.

```python
from tradebot.core.nse_calendar import is_trading_day, trading_days, next_trading_day, holidays_known_until
is_trading_day("2024-01-26")             # False: Republic Day
trading_days("2021-03-08", "2021-03-12") # [2021-03-08, 2021-03-09, 2021-03-10, 2021-03-12] (11 March: Mahashivratri)
```

The source is ``pandas_market_calendars``' ``XNSE`` calendar (``CALENDAR_SOURCE``): its NSE holiday list,
maintained upstream from the exchange's yearly circulars. Beyond the last year that list covers
(``holidays_known_until()``) every weekday counts as a trading day: a date past it is an assumption,
and callers that plan that far ahead should say so. Special sessions (a Saturday budget day, Muhurat
trading) are not in the list. IST has no daylight saving: a date is an IST calendar date.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from typing import Any

import pandas as pd

from tradebot.core.nse_time import DAY_NS, IST_OFFSET_NS

CALENDAR_NAME = "XNSE"


def _date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    ts = pd.Timestamp(value)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("Asia/Kolkata")
    return ts.date()


@lru_cache(maxsize=1)
def _calendar() -> Any:
    import pandas_market_calendars as pmc

    return pmc.get_calendar(CALENDAR_NAME)


@lru_cache(maxsize=64)
def _open_days(year: int) -> frozenset[dt.date]:
    schedule = _calendar().schedule(f"{year}-01-01", f"{year}-12-31")
    return frozenset(d.date() for d in schedule.index)


@lru_cache(maxsize=1)
def holidays_known_until() -> dt.date:
    """The last date the holiday list covers (the end of its last year with a weekday holiday)."""
    cal = _calendar()
    days = [pd.Timestamp(d).date() for d in cal.adhoc_holidays] if hasattr(cal, "adhoc_holidays") else []
    last = max((d for d in days if d.weekday() < 5), default=dt.date.today())
    return dt.date(last.year, 12, 31)


def is_trading_day(day: Any) -> bool:
    """Whether NSE's regular session runs on ``day`` (a date, ISO text, or a timestamp: its IST date)."""
    d = _date(day)
    if d.weekday() >= 5:
        return False
    return d in _open_days(d.year)


def is_trading_day_ns(ns: int) -> bool:
    """``is_trading_day`` of the IST date of an epoch-nanosecond time."""
    return _trading_day_number((int(ns) + IST_OFFSET_NS) // DAY_NS)


@lru_cache(maxsize=4096)
def _trading_day_number(day: int) -> bool:
    return is_trading_day(dt.date(1970, 1, 1) + dt.timedelta(days=day))


def trading_days(start: Any, end: Any) -> list[dt.date]:
    """The trading days from ``start`` to ``end``, both included."""
    a, b = _date(start), _date(end)
    out = []
    for year in range(a.year, b.year + 1):
        out += sorted(d for d in _open_days(year) if a <= d <= b)
    return out


def next_trading_day(day: Any) -> dt.date:
    """The first trading day after ``day``."""
    d = _date(day) + dt.timedelta(days=1)
    while not is_trading_day(d):
        d += dt.timedelta(days=1)
    return d


def calendar_source() -> str:
    """Where the trading days come from (for reports and logs)."""
    import importlib.metadata as md

    return (f"pandas_market_calendars {md.version('pandas_market_calendars')} {CALENDAR_NAME}, holidays known to "
            f"{holidays_known_until().isoformat()}")


__all__ = ["CALENDAR_NAME", "calendar_source", "holidays_known_until", "is_trading_day", "is_trading_day_ns",
           "next_trading_day", "trading_days"]
