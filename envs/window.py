"""A backtest window: the bars a run may read (a warm-up, then the traded bars) and where trading starts.

Every backtest that starts after a warm-up goes through ``BacktestWindow``: ``tradebot backtest
--start/--end``, the walk-forward test windows, policy backtests and the live session's reference
backtest. Its rules:

* decisions are made on the whole ``history`` (indicators and features warmed up, nothing after the
  window read), and only the traded bars' share of them is backtested;
* the account starts flat, with the initial cash, at the first traded bar;
* the ATR the engine sizes, stops and slips with is computed over the history, so the first traded
  bar already knows it;
* a baseline that carries positions overnight decides on the traded bars alone (on the history it
  could hold a position bought before the window), so it starts flat too; a signal baseline
  (moving averages, channels, RSI, ``tsmom``'s year of closes) computes its signals on the whole
  history and trades them from flat.

```python
window = BacktestWindow.from_dates(bars, start="2021-06-01", end="2021-07-01")
result, run_config = window.run_baseline(get_baseline("sma_crossover"), EngineConfig())
result = window.run(window.traded(actions_over_the_history), EngineConfig())
```
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tradebot.core.errors import UserInputError
from tradebot.core.nse_time import session_day
from tradebot.envs.backtest import BacktestResult, run_backtest
from tradebot.envs.engine_config import EngineConfig
from tradebot.envs.market_data import compute_atr
from tradebot.features.bars import Bars

if TYPE_CHECKING:
    from tradebot.envs.baselines import Baseline

DateLike = str | dt.date | pd.Timestamp | None


def _timestamp(value: DateLike, tz) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize(tz) if ts.tzinfo is None else ts.tz_convert(tz)


def first_bar_at_or_after(index: pd.DatetimeIndex, when: DateLike) -> int:
    """Position of the first bar at or after ``when`` (a date is read as IST midnight; ``len(index)``: none)."""
    return int(index.searchsorted(_timestamp(when, index.tz)))


@dataclass(frozen=True)
class BacktestWindow:
    """``history``: every bar the run may read; trading starts flat at ``history[first]``."""

    history: Bars
    first: int

    def __post_init__(self) -> None:
        if not 0 <= self.first < len(self.history):
            raise ValueError(f"first traded bar {self.first} outside the history's {len(self.history)} bars")

    @classmethod
    def from_dates(cls, bars: Bars, start: DateLike = None, end: DateLike = None) -> BacktestWindow:
        """The window trading ``start <= bar < end`` (dates in IST, as ``Bars.between`` reads them), with
        every earlier bar as its warm-up; no ``start``: trading starts at the first bar."""
        history = bars.between(None, _timestamp(end, bars.index.tz)) if end is not None else bars
        if len(history) == 0:
            raise UserInputError(f"no bars before --end {end}; the data starts {bars.index[0].isoformat()}")
        first = 0
        if start is not None:
            first = first_bar_at_or_after(history.index, start)
            if first >= len(history) - 1:
                raise UserInputError(f"fewer than 2 bars between --start {start} and --end "
                                     f"{end or 'the end of the data'} "
                                     f"(data: {bars.index[0].date()} .. {bars.index[-1].date()})")
        return cls(history, first)

    @property
    def bars(self) -> Bars:
        """The traded bars."""
        return self.history if self.first == 0 else self.history.slice(self.first, len(self.history))

    @property
    def warmup_bars(self) -> int:
        """Bars before the traded ones (read for indicators and features only)."""
        return self.first

    def starting_at(self, first: int) -> BacktestWindow:
        """The same history, trading from bar ``first``."""
        return BacktestWindow(self.history, first)

    def starting_at_session(self, position: int) -> BacktestWindow:
        """Trading from the first bar at or after ``position`` that opens a session (``position``
        itself when no later session opens before the last bar)."""
        day = np.asarray(session_day(self.history.index))
        opens = np.flatnonzero(np.r_[True, day[1:] != day[:-1]])
        later = opens[opens >= position]
        return self.starting_at(int(later[0]) if len(later) and later[0] < len(day) - 1 else position)

    def traded(self, per_bar: np.ndarray) -> np.ndarray:
        """The traded bars' share of an array with one value per history bar (a longer array, aligned
        with the same first bar, e.g. over every bar of the data, is cut at the history's end)."""
        return np.asarray(per_bar)[self.first:len(self.history)]

    def resolve(self, config: EngineConfig) -> EngineConfig:
        """``config`` with the instrument catalog's values (lot, margin, futures product) for the traded
        symbol on the first traded date (``EngineConfig.for_instrument``)."""
        return config.for_instrument(self.history.symbol, self.history.index[self.first].date())

    def run(self, actions, config: EngineConfig, atr: np.ndarray | None = None) -> BacktestResult:
        """Backtest ``actions`` (one per traded bar, ``Action`` values) through the fill engine.

        ``atr``: the ATR per *history* bar (e.g. the feature pipeline's); None: pandas_ta ATR over the
        history when the config reads the ATR.
        """
        config = self.resolve(config)
        if atr is None and config.needs_atr and self.first > 0:
            atr = compute_atr(self.history, config.atr_period)
        return run_backtest(self.bars, actions, config, atr=None if atr is None else self.traded(atr))

    def run_baseline(self, baseline: Baseline, config: EngineConfig, seed: int = 0,
                     **params: Any) -> tuple[BacktestResult, EngineConfig]:
        """Baseline ``baseline`` over the traded bars, and the engine settings it ran under (``config``
        with the baseline's own overrides)."""
        run_config = self.resolve(baseline.engine_config(config, self.history, **params))
        if not run_config.flat_at_session_end:
            traded = self.bars
            # the ATR over the history: the first traded bar knows it, as the policy's does
            atr = compute_atr(self.history, run_config.atr_period) if run_config.needs_atr else None
            traded_atr = None if atr is None else self.traded(atr)
            if baseline.signals is not None:  # read the history, trade the window from flat
                from tradebot.envs.baselines import signals_to_actions

                signals = baseline.signals(self.history, run_config, **{**baseline.params, **params})
                actions = signals_to_actions(traded, config=run_config, atr=traded_atr, **{
                    k: (self.traded(v) if isinstance(v, np.ndarray) else v) for k, v in signals.items()})
            else:
                actions = baseline(traded, run_config, seed=seed, atr=traded_atr, **params)
            return run_backtest(traded, actions, run_config, atr=traded_atr), run_config
        actions = self.traded(baseline(self.history, run_config, seed=seed, **params))
        return self.run(actions, run_config), run_config
