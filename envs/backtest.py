"""Backtester: run an action (or signal) series through the fill engine and label the results.

``run_backtest(bars, actions)`` is the same engine the env steps (``tradebot.envs.engine.step_bar``), run in
one numba loop; the result carries pandas objects indexed by bar timestamps. ``run_signals`` is
the signal-driven path (entries/exits as boolean arrays), also over ``step_bar``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tradebot.envs.engine import (
    EXIT_REASON_NAMES,
    N_ACTIONS,
    N_TRADE,
    S_COSTS_TOTAL,
    S_INVALID,
    T_ENTRY_BAR,
    T_ENTRY_COSTS,
    T_ENTRY_PRICE,
    T_EXIT_BAR,
    T_EXIT_COSTS,
    T_EXIT_PRICE,
    T_GROSS_PNL,
    T_PNL,
    T_QTY,
    T_REASON,
    T_SIDE,
    T_STOP,
    T_TAKE_PROFIT,
    run_actions,
    run_signals as signal_kernel,
)
from tradebot.envs.engine_config import EngineConfig
from tradebot.envs.market_data import market_data
from tradebot.features.bars import Bars, load_bars
from tradebot.core.errors import UserInputError

# Trade-log columns, in order.
TRADE_COLUMNS: tuple[str, ...] = (
    "entry_time", "exit_time", "entry_bar", "exit_bar", "side", "qty", "entry_price", "exit_price",
    "stop_price", "take_profit_price", "gross_pnl", "entry_costs", "exit_costs", "costs", "pnl",
    "return_pct", "bars_held", "exit_reason",
)


@dataclass(frozen=True)
class BacktestResult:
    """Outcome of one backtest. Series are indexed by bar timestamp; equity is marked at each close."""

    equity: pd.Series
    cash: pd.Series
    positions: pd.Series  # signed units held after each bar (+ long, - short)
    trades: pd.DataFrame  # TRADE_COLUMNS, one row per closed trade
    invalid_actions: int
    costs_total: float
    config: EngineConfig

    @property
    def final_equity(self) -> float:
        return float(self.equity.iloc[-1])

    @property
    def total_return(self) -> float:
        return self.final_equity / self.config.initial_cash - 1.0

    @property
    def realized_pnl(self) -> pd.Series:
        """Cumulative P&L of closed trades (net of their costs) after each bar."""
        r = np.zeros(len(self.equity))
        np.add.at(r, self.trades["exit_bar"].to_numpy(), self.trades["pnl"].to_numpy())
        return pd.Series(np.cumsum(r), index=self.equity.index, name="realized_pnl")

    @property
    def unrealized_pnl(self) -> pd.Series:
        """Mark-to-market P&L of the open position after each bar, net of its entry costs."""
        return (self.equity - self.config.initial_cash - self.realized_pnl).rename("unrealized_pnl")

    @property
    def margin(self) -> pd.Series:
        """Margin blocked by the open position after each bar: entry notional / leverage (1 for delivery)."""
        m = np.zeros(len(self.equity) + 1)
        blocked = self.trades["qty"].to_numpy() * self.trades["entry_price"].to_numpy() / self.config.effective_leverage
        np.add.at(m, self.trades["entry_bar"].to_numpy(), blocked)
        np.add.at(m, self.trades["exit_bar"].to_numpy(), -blocked)
        return pd.Series(np.cumsum(m)[:-1], index=self.equity.index, name="margin")


def trades_frame(log: np.ndarray, index: pd.DatetimeIndex) -> pd.DataFrame:
    """Label a numba trade log (``T_*`` columns) with timestamps, sides and exit reasons."""
    entry_bar = log[:, T_ENTRY_BAR].astype(np.int64)
    exit_bar = log[:, T_EXIT_BAR].astype(np.int64)
    side = log[:, T_SIDE]
    qty = log[:, T_QTY]
    entry_px = log[:, T_ENTRY_PRICE]
    costs = log[:, T_ENTRY_COSTS] + log[:, T_EXIT_COSTS]
    notional = qty * entry_px
    with np.errstate(divide="ignore", invalid="ignore"):
        ret = np.where(notional > 0, log[:, T_PNL] / notional * 100.0, np.nan)
    reasons = pd.Categorical.from_codes(log[:, T_REASON].astype(np.int64), categories=list(EXIT_REASON_NAMES))
    sides = pd.Categorical.from_codes((side < 0).astype(np.int64), categories=["long", "short"])
    return pd.DataFrame({
        "entry_time": index[entry_bar],
        "exit_time": index[exit_bar],
        "entry_bar": entry_bar,
        "exit_bar": exit_bar,
        "side": sides,
        "qty": qty,
        "entry_price": entry_px,
        "exit_price": log[:, T_EXIT_PRICE],
        "stop_price": log[:, T_STOP],
        "take_profit_price": log[:, T_TAKE_PROFIT],
        "gross_pnl": log[:, T_GROSS_PNL],
        "entry_costs": log[:, T_ENTRY_COSTS],
        "exit_costs": log[:, T_EXIT_COSTS],
        "costs": costs,
        "pnl": log[:, T_PNL],
        "return_pct": ret,
        "bars_held": exit_bar - entry_bar,
        "exit_reason": reasons,
    }, columns=list(TRADE_COLUMNS))


def resolved_for(config: EngineConfig, bars: Bars) -> EngineConfig:
    """``config`` with its instrument-catalog values for the bars' symbol on their first date."""
    if config.resolved or len(bars) == 0:
        return config
    return config.for_instrument(bars.symbol, bars.index[0].date())


def _bars(bars: Bars | str | Path) -> Bars:
    return bars if isinstance(bars, Bars) else load_bars(bars)


def _run(kernel, n: int, *args) -> tuple:
    """Call a backtest kernel with a trade log that has room for every trade (rerun if it had not)."""
    log = np.empty((max(64, n // 16), N_TRADE))
    equity, cash, position, k, state = kernel(*args, log)
    if k > log.shape[0]:  # more trades than rows: rerun with the exact size (deterministic)
        log = np.empty((k, N_TRADE))
        equity, cash, position, k, state = kernel(*args, log)
    return equity, cash, position, log[:k], state


def _result(bars: Bars, out: tuple, config: EngineConfig) -> BacktestResult:
    equity, cash, position, log, state = out
    idx = bars.index
    return BacktestResult(
        equity=pd.Series(equity, index=idx, name="equity", copy=False),
        cash=pd.Series(cash, index=idx, name="cash", copy=False),
        positions=pd.Series(position, index=idx, name="position", copy=False),
        trades=trades_frame(log, idx),
        invalid_actions=int(state[S_INVALID]),
        costs_total=float(state[S_COSTS_TOTAL]),
        config=config,
    )


def run_backtest(bars: Bars | str | Path, actions, config: EngineConfig | None = None,
                 atr: np.ndarray | None = None) -> BacktestResult:
    """Backtest an action series: ``actions[i]`` (an ``Action``) is decided at bar i's close.

    ``atr``: ATR in price units per bar (e.g. from the feature pipeline); computed with pandas_ta
    (``config.atr_period``) when omitted.
    """
    bars = _bars(bars)
    config = resolved_for(config or EngineConfig(), bars)
    acts = np.asarray(actions)
    if acts.shape != (len(bars),):
        raise UserInputError(f"actions has shape {acts.shape}; expected one action per bar ({len(bars)},)")
    if acts.dtype.kind == "f":
        if not np.isfinite(acts).all() or (acts != np.round(acts)).any():
            raise UserInputError("actions must be whole numbers 0..4 (HOLD, BUY_LONG, SELL_SHORT, CLOSE_LONG, CLOSE_SHORT)")
    elif acts.dtype.kind not in "iub":
        raise UserInputError(f"actions must be integers 0..4, got dtype {acts.dtype}")
    acts = acts.astype(np.int64)
    bad = np.flatnonzero((acts < 0) | (acts >= N_ACTIONS))
    if len(bad):
        raise UserInputError(f"actions[{bad[0]}] = {acts[bad[0]]} is not an action; use 0..{N_ACTIONS - 1}")
    data = market_data(bars, config, atr)
    return _result(bars, _run(run_actions, len(bars), data, acts, config.params(), config.cost_vector()), config)


def _signal(name: str, values, n: int) -> np.ndarray:
    if values is None:
        return np.zeros(n, dtype=np.bool_)
    arr = np.asarray(values)
    if arr.shape != (n,):
        raise UserInputError(f"{name} has shape {arr.shape}; expected one value per bar ({n},)")
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        arr = np.nan_to_num(arr, nan=0.0)
    return arr.astype(np.bool_)


def run_signals(bars: Bars | str | Path, entries, exits=None, short_entries=None, short_exits=None,
                config: EngineConfig | None = None, atr: np.ndarray | None = None) -> BacktestResult:
    """Signal-driven backtest: a signal at bar i acts at bar i+1's open, through the same engine.

    An entry is taken only when flat (and not on a bar that also signals its exit); an exit only
    when holding that side. Stops, take-profits and square-off apply as in ``run_backtest``.
    """
    bars = _bars(bars)
    config = resolved_for(config or EngineConfig(), bars)
    n = len(bars)
    le = _signal("entries", entries, n)
    lx = _signal("exits", exits, n)
    se = _signal("short_entries", short_entries, n)
    sx = _signal("short_exits", short_exits, n)
    data = market_data(bars, config, atr)
    return _result(bars, _run(signal_kernel, n, data, le, lx, se, sx, config.params(), config.cost_vector()), config)
