"""The engine's price, cost and size rules under one ``EngineConfig``, for Python callers.

The risk engine sizes an order and the paper broker fills one with the numbers ``step_bar`` would
use; ``FillRules`` calls the same numba functions on the config's parameter and cost vectors, so
nothing outside ``envs`` needs the vectors' layouts.
"""

from __future__ import annotations

import math

import numpy as np

from tradebot.envs.engine import order_cost, position_size, slipped
from tradebot.envs.engine_config import (
    P_ALLOW_SHORT,
    P_FIXED_QTY,
    P_LEVERAGE,
    P_LOT,
    P_MAX_NOTIONAL,
    P_STOP_MULT,
    P_TP_MULT,
    P_USE_STOP,
    P_USE_TP,
    EngineConfig,
)


class FillRules:
    """``config``'s parameter vector (``params``) and cost vector (``costs``), with the rules on them."""

    __slots__ = ("config", "params", "costs", "_uncapped")

    def __init__(self, config: EngineConfig, params: np.ndarray | None = None, costs: np.ndarray | None = None):
        self.config = config
        self.params = config.params() if params is None else params
        self.costs = config.cost_vector() if costs is None else costs
        self._uncapped = self.params.copy()  # sizing without the margin caps at the fill price
        self._uncapped[P_LEVERAGE] = np.inf
        self._uncapped[P_MAX_NOTIONAL] = np.inf

    @property
    def lot(self) -> float:
        return float(self.params[P_LOT])

    @property
    def shorts_allowed(self) -> bool:
        return bool(self.params[P_ALLOW_SHORT] > 0.0)

    def fill_price(self, price: float, side: float, atr: float) -> float:
        """A market order's fill at ``price`` after slippage: a buy (``side`` +1) pays up, a sell (-1) gets less."""
        return float(slipped(price, float(side), atr, self.params))

    def order_cost(self, price: float, qty: float, is_buy: bool) -> float:
        """The NSE charges on one executed order (rupees)."""
        return float(order_cost(self.costs, price, qty, is_buy))

    def position_size(self, equity: float, atr: float, fill: float, *, margin_caps: bool = True) -> float:
        """Units the engine buys for an entry at ``fill`` (risk sizing or the fixed size, whole lots);
        ``margin_caps=False``: without the leverage and notional caps at the fill price."""
        return float(position_size(equity, atr, fill, self.params if margin_caps else self._uncapped))

    def stop_distance(self, atr: float) -> float:
        """How far from the fill the engine puts the stop, for an entry decided at this ATR."""
        return float(self.params[P_STOP_MULT] * atr)

    def take_profit_distance(self, atr: float) -> float:
        """How far from the fill the engine puts the take-profit (0 when the config has none)."""
        return float(self.params[P_TP_MULT] * atr)

    def for_order(self, qty: float, stop_distance: float | None, take_profit_distance: float | None,
                  atr: float) -> FillRules:
        """These rules for one entry order: ``qty`` units, and the order's bracket distances (price
        units; None: the config's) expressed as ATR multiples of ``atr``, the ATR it is filled with.
        A distance equal to the config's own multiple keeps the config's (bit for bit)."""
        params = self.params.copy()
        params[P_FIXED_QTY] = qty
        for key, use, dist in ((P_STOP_MULT, P_USE_STOP, stop_distance), (P_TP_MULT, P_USE_TP, take_profit_distance)):
            if dist is None or not (atr > 0.0):
                continue
            if params[use] <= 0.0 or not math.isclose(dist, params[key] * atr, rel_tol=1e-12, abs_tol=0.0):
                params[use] = 1.0
                params[key] = dist / atr
        return FillRules(self.config, params, self.costs)
