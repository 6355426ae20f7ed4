"""An engine account seen from Python: named fields over the kernel's flat state vector.

The numba kernels keep their float64 arrays (``tradebot.envs.engine``, ``S_*`` / ``T_*`` layouts);
code outside ``envs`` reads and steps an account through ``EngineAccount`` and never indexes the
vector itself. The paper broker, for one, holds an ``EngineAccount`` per symbol and advances it one
live bar at a time with ``step``, which runs ``step_bar``, the kernel the backtester runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tradebot.envs.engine import (
    EXIT_REASON_NAMES,
    N_STATE,
    S_BAR,
    S_CASH,
    S_CLOSED,
    S_COSTS_TOTAL,
    S_ENTRY_BAR,
    S_ENTRY_COSTS,
    S_ENTRY_PRICE,
    S_EQUITY,
    S_INVALID,
    S_MARGIN,
    S_N_TRADES,
    S_QTY,
    S_REALIZED,
    S_STOP,
    S_TP,
    S_TRADE,
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
    ExitReason,
    new_state,
    step_bar,
)
from tradebot.envs.fill_rules import FillRules
from tradebot.envs.market_data import N_DATA, row_atr, row_starts_at_square_off


@dataclass(frozen=True)
class ClosedTrade:
    """A trade the engine closed: one row of a backtest's trade log."""

    entry_bar: int
    exit_bar: int
    side: float  # +1 long, -1 short
    qty: float
    entry_price: float
    exit_price: float
    stop_price: float  # NaN: no stop
    take_profit_price: float  # NaN: no take-profit
    gross_pnl: float
    entry_costs: float
    exit_costs: float
    pnl: float  # net of both orders' costs
    reason: ExitReason

    @property
    def exit_kind(self) -> str:
        """``signal``, ``stop``, ``take_profit``, ``square_off`` or ``end_of_data``."""
        return EXIT_REASON_NAMES[int(self.reason)]


class EngineAccount:
    """One account of the fill engine. ``state`` is the kernel's vector; everything else names it."""

    __slots__ = ("state",)

    def __init__(self, state: np.ndarray):
        if state.shape != (N_STATE,) or state.dtype != np.float64:
            raise ValueError(f"an engine state is {N_STATE} float64 values, got {state.shape} {state.dtype}")
        self.state = state

    @classmethod
    def new(cls, rules: FillRules) -> EngineAccount:
        """A fresh account: flat, cash = the initial cash."""
        return cls(new_state(rules.params))

    @classmethod
    def from_bytes(cls, blob: bytes) -> EngineAccount:
        return cls(np.frombuffer(blob, dtype=np.float64).copy())

    def to_bytes(self) -> bytes:
        return self.state.tobytes()

    def copy(self) -> EngineAccount:
        return EngineAccount(self.state.copy())

    # ---- the position ---------------------------------------------------------------------------
    @property
    def qty(self) -> float:
        """Units held: + long, - short, 0 flat."""
        return float(self.state[S_QTY])

    @property
    def entry_price(self) -> float:
        return float(self.state[S_ENTRY_PRICE])

    @property
    def entry_costs(self) -> float:
        return float(self.state[S_ENTRY_COSTS])

    @property
    def entry_bar(self) -> int:
        return int(self.state[S_ENTRY_BAR])

    @property
    def stop_price(self) -> float:
        """The resting stop of the open position (NaN: none)."""
        return float(self.state[S_STOP])

    @property
    def take_profit_price(self) -> float:
        """The resting take-profit of the open position (NaN: none)."""
        return float(self.state[S_TP])

    @property
    def margin(self) -> float:
        return float(self.state[S_MARGIN])

    # ---- money and counters ---------------------------------------------------------------------
    @property
    def cash(self) -> float:
        return float(self.state[S_CASH])

    @property
    def equity(self) -> float:
        """Cash plus the position marked at the last close."""
        return float(self.state[S_EQUITY])

    @property
    def realized_pnl(self) -> float:
        return float(self.state[S_REALIZED])

    @property
    def costs_total(self) -> float:
        return float(self.state[S_COSTS_TOTAL])

    @property
    def trades(self) -> int:
        """Trades closed so far."""
        return int(self.state[S_N_TRADES])

    @property
    def invalid_actions(self) -> int:
        """Actions the engine counted as no-ops (an entry while holding, a close with nothing to close ...)."""
        return int(self.state[S_INVALID])

    @property
    def bar(self) -> int:
        """The bar of the last step (-1: none yet)."""
        return int(self.state[S_BAR])

    @property
    def closed_trade(self) -> ClosedTrade | None:
        """The trade closed by the last step, if one was."""
        if not self.state[S_CLOSED] > 0.0:
            return None
        t = self.state[S_TRADE:]
        return ClosedTrade(
            entry_bar=int(t[T_ENTRY_BAR]), exit_bar=int(t[T_EXIT_BAR]), side=float(t[T_SIDE]), qty=float(t[T_QTY]),
            entry_price=float(t[T_ENTRY_PRICE]), exit_price=float(t[T_EXIT_PRICE]), stop_price=float(t[T_STOP]),
            take_profit_price=float(t[T_TAKE_PROFIT]), gross_pnl=float(t[T_GROSS_PNL]),
            entry_costs=float(t[T_ENTRY_COSTS]), exit_costs=float(t[T_EXIT_COSTS]), pnl=float(t[T_PNL]),
            reason=ExitReason(int(t[T_REASON])))

    # ---- stepping ---------------------------------------------------------------------------------
    def step(self, prev_row: np.ndarray | None, row: np.ndarray, action: int, rules: FillRules, *,
             final: bool = False) -> float:
        """Run the engine through the bar of ``row`` (``tradebot.envs.market_data.market_row``), filling
        ``action``, decided at the close of the bar of ``prev_row`` (None: no earlier bar).

        ``final``: the data ends with this bar (any position is closed at its close). Returns the
        equity marked at the bar's close. The account's bar numbers are the kernel's (0 and 1 for the
        two rows): a caller that counts bars itself sets them with ``renumber``.
        """
        data = np.empty((2, N_DATA), dtype=np.float64)
        data[0] = prev_row if prev_row is not None else np.nan
        data[1] = row
        return float(step_bar(self.state, data, 1, int(action), 2 if final else 3, rules.params, rules.costs))

    def renumber(self, bar: int, entry_bar: int | None = None) -> None:
        """Set the bar of the last step (and of the open position's entry) to the caller's numbering."""
        self.state[S_BAR] = float(bar)
        if entry_bar is not None:
            self.state[S_ENTRY_BAR] = float(entry_bar)


def refused_entry_reason(before: EngineAccount, prev_row: np.ndarray | None, row: np.ndarray, short: bool,
                         rules: FillRules) -> str:
    """Why ``step`` did not fill an entry, in the engine's own order of checks (for the record)."""
    atr = row_atr(prev_row)
    if before.qty != 0.0:
        return "position not flat at the fill"
    if row_starts_at_square_off(row):
        return "the fill bar starts at or after the square-off time"
    if short and not rules.shorts_allowed:
        return "short selling is not allowed for this product"
    if not (atr > 0.0 and math.isfinite(atr)):
        return "no ATR known before the fill bar (sizing and stops need it)"
    return "the engine sized the entry to zero (equity, margin or notional limits)"
