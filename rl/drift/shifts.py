"""Injected regime shifts: a bar series that changes character at a known bar (to measure the monitors).

Every bar is rebuilt from its moves relative to the previous close, in log space: open, high, low and
close of bar t are ``prev_close * exp(m)`` for that price's move ``m``. From bar ``at`` on, the moves are
changed and the prices chained again from the last unchanged close, so the series stays continuous
and valid OHLC (high >= open, close >= low):

* ``vol_x3``: every move times 3 (volatility tripled, direction kept);
* ``drift_reversed``: every move negated (the path mirrored: up days become down days; the high
  comes from the low and the low from the high);
* ``instrument``: the moves of another instrument's bars (``other``, from its first bar), on this
  series' timestamps: a different market swapped in at the same price level.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from tradebot.core.errors import UserInputError
from tradebot.features.bars import Bars

ShiftKind = Literal["vol_x3", "drift_reversed", "instrument"]
SHIFTS: tuple[str, ...] = ("vol_x3", "drift_reversed", "instrument")


def _moves(bars: Bars) -> np.ndarray:
    o, h, lo, c = (bars.column(k) for k in ("open", "high", "low", "close"))
    prev = np.concatenate([[o[0]], c[:-1]])
    return np.log(np.vstack([o, h, lo, c]) / prev)  # (4, n): open, high, low, close moves


def shifted_bars(bars: Bars, at: int, kind: ShiftKind, other: Bars | None = None, factor: float = 3.0) -> Bars:
    """``bars`` with shift ``kind`` from bar ``at`` on (see the module docstring)."""
    n = len(bars)
    if not 0 < at < n:
        raise UserInputError(f"shift bar {at} is outside the series (1 .. {n - 1})")
    m = _moves(bars)
    tail = m[:, at:].copy()
    if kind == "vol_x3":
        tail *= factor
    elif kind == "drift_reversed":
        tail = np.vstack([-tail[0], -tail[2], -tail[1], -tail[3]])
    elif kind == "instrument":
        if other is None:
            raise UserInputError("an instrument swap needs the other instrument's bars")
        om = _moves(other)[:, 1:]  # the first bar has no previous close
        if om.shape[1] < tail.shape[1]:
            raise UserInputError(f"the other instrument has {om.shape[1] + 1} bars; {tail.shape[1] + 1} needed")
        tail = om[:, :tail.shape[1]]
    else:
        raise UserInputError(f"unknown shift {kind!r} (use one of {', '.join(SHIFTS)})")
    close = bars.column("close")
    log_close = np.log(close[at - 1]) + np.cumsum(tail[3])
    prev = np.exp(np.concatenate([[np.log(close[at - 1])], log_close[:-1]]))
    new = prev * np.exp(tail)
    frame = bars.frame.copy()
    for row, col in enumerate(("open", "high", "low", "close")):
        values = frame[col].to_numpy(dtype=np.float64).copy()
        values[at:] = new[row]
        frame[col] = values
    return Bars.from_frame(frame, symbol=bars.symbol, source=f"{bars.symbol or 'bars'} ({kind} at bar {at})",
                           timeframe=bars.timeframe)
