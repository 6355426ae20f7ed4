"""The out-of-sample record: what each test window left behind, chained across windows.

Each fold's test window starts from the initial cash; ``stitch`` chains their returns into one
equity curve, and ``stitched_metrics`` computes the metrics of that record (trades, exposure and
costs summed over the windows). The overfitting statistics use its ``session_returns``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class WindowRecord:
    """What one test window left behind, enough to chain windows into one out-of-sample record."""

    equity: pd.Series  # marked at each bar's close, starting from the initial cash
    positions: np.ndarray
    trade_pnl: np.ndarray  # net P&L of each closed trade
    traded_notional: float  # entries and exits of every closed trade
    costs: float
    invalid_actions: int

    @classmethod
    def from_result(cls, result) -> "WindowRecord":
        """From an ``tradebot.envs.backtest.BacktestResult``."""
        return cls.from_frames(result.equity, result.positions.to_numpy(), result.trades, result.costs_total,
                               result.invalid_actions)

    @classmethod
    def from_frames(cls, equity: pd.Series, positions: np.ndarray, trades: pd.DataFrame, costs: float,
                    invalid_actions: int) -> "WindowRecord":
        pnl = trades["pnl"].to_numpy(dtype=np.float64) if len(trades) else np.zeros(0)
        notional = 0.0
        if len(trades):
            qty = trades["qty"].to_numpy(dtype=np.float64)
            notional = float(np.nansum(qty * trades["entry_price"].to_numpy(dtype=np.float64))
                             + np.nansum(qty * trades["exit_price"].to_numpy(dtype=np.float64)))
        return cls(equity, np.asarray(positions, dtype=np.float64), pnl, notional, float(costs), int(invalid_actions))


def stitch(equities: Sequence[pd.Series], initial_cash: float) -> pd.Series:
    """Chain test-window equity curves (each starting from ``initial_cash``) into one record."""
    from tradebot.envs.performance import returns_from_equity

    r = pd.concat([returns_from_equity(e, initial_cash) for e in equities])
    return (initial_cash * (1.0 + r).cumprod()).rename("equity")


def stitched_metrics(records: Sequence[WindowRecord], initial_cash: float,
                     timeframe: str) -> tuple[pd.Series, dict[str, float]]:
    """The chained equity of ``records`` and its metrics (trades, exposure and costs summed over windows)."""
    from tradebot.envs.performance import compute_metrics

    equity = stitch([r.equity for r in records], initial_cash)
    m = compute_metrics(equity, timeframe=timeframe, initial_capital=initial_cash,
                        trade_pnl=np.concatenate([r.trade_pnl for r in records]),
                        positions=np.concatenate([r.positions for r in records]),
                        traded_notional=sum(r.traded_notional for r in records),
                        costs=sum(r.costs for r in records),
                        invalid_actions=sum(r.invalid_actions for r in records))
    return equity, dict(m.values)


def session_returns(equity: pd.Series, initial_cash: float) -> pd.Series:
    """Per-session (daily) returns of an equity curve, closing equity to closing equity."""
    from tradebot.core.nse_time import IST

    closes = equity.groupby(equity.index.tz_convert(IST).date).last()
    prev = np.concatenate([[initial_cash], closes.to_numpy()[:-1]])
    return pd.Series(closes.to_numpy() / prev - 1.0, index=closes.index, name="returns")
