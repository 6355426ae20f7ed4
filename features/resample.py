"""NSE-session-aware resampling of validated bars to a coarser bar size.

Bins are anchored at the session open (09:15 IST) each day: a bin of ``n`` minutes covers
``[09:15 + k·n, 09:15 + (k+1)·n)`` and is labelled by its start, so 1h bins are 09:15, 10:15, …,
15:15 (the last one only 15 minutes long, up to the 15:30 close). ``1d`` gives one bar per session,
labelled ``T00:00`` of the trading date (the convention of the daily files). Aggregation:
open = first, high = max, low = min, close = last, volume = sum. A bin is written when at least
one bar falls in it; bars outside 09:15–15:30 are dropped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from tradebot.features.bars import BAR_COLUMNS, Bars

from tradebot.core.errors import UserInputError
from tradebot.core.nse_time import (
    IST,
    SESSION_OPEN_MINUTE,
    in_session,
    is_intraday,
    minute_of_day,
    timeframe_minutes,
)

#: Exchanges whose regular session is the NSE cash/F&O session 09:15–15:30 IST.
SESSION_EXCHANGES = frozenset({"NSE", "BSE", "NFO", "BFO"})


@dataclass(frozen=True)
class Resampled:
    """The resampled bars and how many input bars were dropped for lying outside the session."""

    bars: Bars
    dropped_outside_session: int


def canonical_timeframe(timeframe: str) -> str:
    """Normalise a bar size: ``'60m'`` -> ``'1h'``, ``'5M'`` -> ``'5m'``; one line on a bad value."""
    text = (timeframe or "").strip().lower()
    try:
        minutes = timeframe_minutes(text)
    except ValueError as err:
        raise UserInputError(f"timeframe {timeframe!r}: {err}") from None
    if minutes <= 0:
        raise UserInputError(f"timeframe {timeframe!r} must be at least 1m")
    if not is_intraday(text):
        return "1d"
    if minutes % 60 == 0:
        return f"{minutes // 60}h"
    return f"{minutes}m"


def check_resample(source_tf: str, target_tf: str) -> None:
    """Raise ``UserInputError`` unless ``source_tf`` bars can be aggregated into ``target_tf`` bins."""
    src, dst = canonical_timeframe(source_tf), canonical_timeframe(target_tf)
    if src == dst:
        return
    if not is_intraday(src):
        raise UserInputError(f"cannot resample {src} bars to {dst}: daily bars can only stay 1d "
                             "(resampling makes bars coarser, never finer)")
    if not is_intraday(dst):
        return
    s, d = timeframe_minutes(src), timeframe_minutes(dst)
    if d < s:
        raise UserInputError(f"cannot resample {src} bars to the finer {dst}: resampling only makes bars "
                             f"coarser (choose a multiple of {src}, e.g. {canonical_timeframe(f'{3 * s}m')})")
    if d % s:
        raise UserInputError(f"cannot resample {src} bars to {dst}: {d} minutes is not a multiple of {s} "
                             f"(choose e.g. {canonical_timeframe(f'{3 * s}m')} or 1d)")


def resample(bars: Bars, timeframe: str) -> Resampled:
    """Aggregate ``bars`` into session-anchored ``timeframe`` bins (see the module docstring).

    Raises ``UserInputError`` for a finer or non-multiple bar size, for a symbol whose exchange does
    not trade the NSE session, and when no bar lies inside the session.
    """
    target = canonical_timeframe(timeframe)
    source_tf = canonical_timeframe(bars.timeframe)
    check_resample(source_tf, target)
    exchange = (bars.symbol or "NSE:").split(":", 1)[0]
    if target == source_tf and exchange not in SESSION_EXCHANGES:  # nothing to aggregate
        return Resampled(bars=Bars(frame=bars.frame, symbol=bars.symbol, timeframe=target), dropped_outside_session=0)
    if exchange not in SESSION_EXCHANGES:
        raise UserInputError(f"cannot resample {bars.symbol}: resampling follows the NSE session 09:15–15:30 IST, "
                             f"which {exchange} does not trade; import without --timeframe")
    if not is_intraday(source_tf):  # 1d -> 1d: nothing to aggregate
        return Resampled(bars=Bars(frame=bars.frame, symbol=bars.symbol, timeframe=target), dropped_outside_session=0)

    frame = bars.frame
    keep = in_session(frame.index)
    dropped = int((~keep).sum())
    frame = frame[keep]
    if len(frame) == 0:
        raise UserInputError(f"{bars.symbol or 'bars'}: no bar lies inside the session 09:15–15:30 IST; "
                             "nothing to resample")
    out = aggregate(frame, target)
    return Resampled(bars=Bars(frame=out, symbol=bars.symbol, timeframe=target), dropped_outside_session=dropped)


def bin_labels(index: pd.DatetimeIndex, timeframe: str) -> pd.DatetimeIndex:
    """The IST start label of the session-anchored ``timeframe`` bin of each (in-session) timestamp."""
    local = index.tz_convert(IST)
    midnight = local.normalize()
    if not is_intraday(timeframe):
        return midnight
    n = timeframe_minutes(timeframe)
    into = minute_of_day(local) - SESSION_OPEN_MINUTE
    start = SESSION_OPEN_MINUTE + (into // n) * n
    return midnight + pd.to_timedelta(start, unit="min")


def aggregate(frame: pd.DataFrame, timeframe: str) -> pd.DataFrame:
    """OHLCV aggregation of a sorted, in-session bar frame into ``timeframe`` bins (empty bins skipped)."""
    labels = bin_labels(frame.index, timeframe)
    # Sorted input gives non-decreasing labels, so each bin is one contiguous run of rows.
    lab = labels.as_unit("ns").asi8
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
    ends = np.r_[starts[1:], len(lab)] - 1
    o, h, lo, c, v = (frame[col].to_numpy(dtype="float64") for col in BAR_COLUMNS)
    out = pd.DataFrame(
        {
            "open": o[starts],
            "high": np.maximum.reduceat(h, starts),
            "low": np.minimum.reduceat(lo, starts),
            "close": c[ends],
            "volume": np.add.reduceat(v, starts),
        },
        index=labels[starts].rename("timestamp"),
    )
    return out

