"""The fill engine's market data: one row of floats per bar, the only way bars reach the kernels.

``market_data(bars, config)`` builds the rows of a whole series (backtests, envs); ``market_row``
builds the row of one live bar with the same kernel, so the square-off flag and the session time
left of a live bar are exactly what the backtester computes; only its last-of-session flag comes from
the bar (a live feed knows it from the clock, a replay from its data). Columns (``D_*``):

* open, high, low, close;
* ATR in price units (sizing, stops and ATR slippage of the orders decided at this bar read it);
* flags: ``FLAG_LAST_OF_SESSION`` (the next bar belongs to another session, or there is none),
  ``FLAG_SQUARE_OFF`` (an intraday product and the bar starts at/after the square-off time) and
  ``FLAG_NEXT_SQUARE_OFF`` (the next bar of the same session starts at/after the square-off time, so
  an entry decided at this bar cannot fill: the action masks read it);
* the fraction of the session left after the bar, before square-off (0 for daily bars).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pandas as pd
from numba import njit

from tradebot.core.errors import UserInputError
from tradebot.core.nse_time import (
    DAY_NS,
    IST_OFFSET_NS,
    MINUTE_NS,
    SESSION_CLOSE_MINUTE,
    SESSION_OPEN_MINUTE,
    is_intraday,
    timeframe_minutes,
)
from tradebot.features.bars import Bars

if TYPE_CHECKING:
    from tradebot.envs.engine_config import EngineConfig

# Columns of a market-data row. The kernels of tradebot.envs.engine read them at compile time and
# numba's cache only watches a kernel's own file: after changing this layout, touch engine.py too.
D_OPEN, D_HIGH, D_LOW, D_CLOSE, D_ATR, D_FLAGS, D_TIME_LEFT = range(7)
N_DATA = 7
# bits of the D_FLAGS column
FLAG_LAST_OF_SESSION = 1
FLAG_SQUARE_OFF = 2
FLAG_NEXT_SQUARE_OFF = 4


def compute_atr(bars: Bars, period: int = 14) -> np.ndarray:
    """ATR in price units (pandas_ta, Wilder smoothing); NaN during the warm-up."""
    import pandas_ta as ta

    f = bars.frame
    atr = ta.atr(f["high"], f["low"], f["close"], length=period)
    if atr is None:  # pandas_ta returns None when there are fewer bars than the period
        return np.full(len(bars), np.nan)
    return atr.to_numpy(dtype=np.float64)


def session_layout(index: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
    """(session id, minute of day) per bar in IST, from the integer timestamps (fast for 1M bars).

    Same values as ``tradebot.core.nse_time.session_day`` / ``minute_of_day`` (IST has no DST).
    """
    ns = index.as_unit("ns").asi8 + IST_OFFSET_NS
    return ns // DAY_NS, (ns % DAY_NS) // MINUTE_NS


# Exchanges whose sessions (09:15-15:30 IST), costs and annualisation the engine models. Other markets'
# bars (CRYPTO 24x7, FX 24x5, MCX and currency derivatives with their own hours) can be checked and
# imported, but a backtest of them would square off, charge and annualise as if they were NSE equity.
ENGINE_MARKETS = ("NSE", "BSE", "NFO", "BFO")


def require_engine_market(symbol: str | None) -> None:
    """Refuse (exit 2) bars of a market the fill engine does not model, instead of mis-measuring them.

    Bars without an exchange prefix (a file not named EXCHANGE_NAME_TF) are taken as NSE's, as before.
    """
    if not symbol or ":" not in symbol:
        return
    market = symbol.split(":", 1)[0]
    if market not in ENGINE_MARKETS:
        raise UserInputError(
            f"{symbol}: the fill engine models NSE/BSE sessions (09:15-15:30 IST), their costs and their "
            f"annualisation only, not {market}'s; its bars can be checked and imported (tradebot data check / "
            f"import) but not backtested, trained or evaluated")


def market_data(bars: Bars, config: EngineConfig, atr: np.ndarray | None = None) -> np.ndarray:
    """The engine's per-bar array (``D_*`` columns) for ``bars`` under ``config``.

    ``atr``: ATR in price units per bar; None: pandas_ta ATR(``config.atr_period``) when the
    config reads the ATR (sizing, stops, ATR slippage), else NaN.
    """
    require_engine_market(bars.symbol)
    n = len(bars)
    if atr is None and config.needs_atr:
        atr = compute_atr(bars, config.atr_period)
    if atr is None:
        atr = np.empty(0)  # the kernel writes NaN
    else:
        atr = np.ascontiguousarray(atr, dtype=np.float64)
        if atr.shape != (n,):
            raise UserInputError(f"atr has shape {atr.shape}; expected one value per bar ({n},)")
    f = bars.frame
    idx = bars.index
    ns = idx.asi8 if idx.unit == "ns" else idx.as_unit("ns").asi8
    data = np.empty((n, N_DATA), dtype=np.float64)
    _fill_rows(data, f["open"].to_numpy(), f["high"].to_numpy(), f["low"].to_numpy(), f["close"].to_numpy(), atr,
               ns, *_session_clock(bars.timeframe, config))
    return data


class OneBar(Protocol):
    """One bar as a live feed gives it (``tradebot.live.ports.Bar`` is one)."""

    ts: int  # its start, epoch ns
    open: float
    high: float
    low: float
    close: float
    timeframe: str
    last_of_session: bool  # no later bar of its session will come


def market_row(bar: OneBar, atr: float, config: EngineConfig) -> np.ndarray:
    """The market-data row of one bar under ``config`` (``atr``: its ATR in price units), by
    ``market_data``'s kernel, with the bar's own last-of-session flag and the next bar known from the
    clock (``market_data`` learns both from the next bar): a bar that is not the last of its session
    is followed by the bar starting when it ends."""
    data = np.empty((1, N_DATA), dtype=np.float64)
    o, h, lo, c, a = (np.array([v], dtype=np.float64) for v in (bar.open, bar.high, bar.low, bar.close,
                                                              atr if math.isfinite(atr) else math.nan))
    clock = _session_clock(bar.timeframe, config)
    _fill_rows(data, o, h, lo, c, a, np.array([bar.ts], dtype=np.int64), *clock)
    flags = int(data[0, D_FLAGS]) & ~(FLAG_LAST_OF_SESSION | FLAG_NEXT_SQUARE_OFF)
    if bar.last_of_session:
        flags |= FLAG_LAST_OF_SESSION
    else:
        square_off, intraday, bar_minutes, _ = clock
        minute = ((bar.ts + IST_OFFSET_NS) % DAY_NS) // MINUTE_NS
        if square_off >= 0 and intraday and minute + bar_minutes >= square_off:
            flags |= FLAG_NEXT_SQUARE_OFF
    data[0, D_FLAGS] = flags
    return data[0]


def row_atr(row: np.ndarray | None) -> float:
    """The ATR of a market-data row (NaN for no row: nothing known yet)."""
    return math.nan if row is None else float(row[D_ATR])


def row_blocks_entries(row: np.ndarray) -> bool:
    """Whether an entry decided at the row's bar cannot fill (the next bar starts at/after square-off)."""
    return bool(int(row[D_FLAGS]) & FLAG_NEXT_SQUARE_OFF)


def row_starts_at_square_off(row: np.ndarray) -> bool:
    """Whether the row's bar starts at/after the square-off time (no entry fills on it)."""
    return bool(int(row[D_FLAGS]) & FLAG_SQUARE_OFF)


def _session_clock(timeframe: str, config: EngineConfig) -> tuple[int, bool, int, int]:
    """(square-off minute or -1, intraday bars, bar minutes, the minute the time left runs to)."""
    intraday = is_intraday(timeframe)
    sq = config.square_off_minute if intraday else None
    horizon = sq if sq is not None else SESSION_CLOSE_MINUTE
    return (-1 if sq is None else sq), intraday, (timeframe_minutes(timeframe) if intraday else 0), horizon


@njit(cache=True, error_model="numpy")
def _fill_rows(data, o, h, lo, c, atr, ns, square_off_minute, intraday_bars, bar_minutes, horizon):
    n = o.shape[0]
    span = float(horizon - SESSION_OPEN_MINUTE)
    has_atr = atr.shape[0] == n
    day = (ns[0] + IST_OFFSET_NS) // DAY_NS if n > 0 else 0
    for t in range(n):
        local = ns[t] + IST_OFFSET_NS
        minute = (local % DAY_NS) // MINUTE_NS
        next_day = (ns[t + 1] + IST_OFFSET_NS) // DAY_NS if t + 1 < n else day + 1
        flags = FLAG_LAST_OF_SESSION if next_day != day else 0
        if square_off_minute >= 0 and minute >= square_off_minute:
            flags |= FLAG_SQUARE_OFF
        if square_off_minute >= 0 and next_day == day:
            next_minute = ((ns[t + 1] + IST_OFFSET_NS) % DAY_NS) // MINUTE_NS
            if next_minute >= square_off_minute:
                flags |= FLAG_NEXT_SQUARE_OFF
        data[t, D_OPEN] = o[t]
        data[t, D_HIGH] = h[t]
        data[t, D_LOW] = lo[t]
        data[t, D_CLOSE] = c[t]
        data[t, D_ATR] = atr[t] if has_atr else np.nan
        data[t, D_FLAGS] = flags
        if intraday_bars:
            left = (horizon - (minute + bar_minutes)) / span
            data[t, D_TIME_LEFT] = min(max(left, 0.0), 1.0)
        else:
            data[t, D_TIME_LEFT] = 0.0
        day = next_day
