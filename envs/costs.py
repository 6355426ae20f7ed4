"""NSE trading charges (brokerage, STT, exchange, IPFT, SEBI fee, stamp duty, DP charge, GST).

The rates live in ``envs/costs.yaml`` (dated schedules, each rate with its source). This module
validates that file and turns one product's rates into the flat float64 vector the numba engine
reads (``COST_*`` indices, rates as fractions). The arithmetic itself is in
``tradebot.envs.engine.cost_breakdown`` so that the engine stays the only place costs are computed;
``order_charges`` is the readable front door to it.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import Field, model_validator

from tradebot.core.config import FrozenConfig, parse_config
from tradebot.core.errors import UserInputError

COSTS_FILE = Path(__file__).with_name("costs.yaml")

Product = Literal["equity_intraday", "equity_delivery", "index_futures", "stock_futures"]
PRODUCTS: tuple[str, ...] = ("equity_intraday", "equity_delivery", "index_futures", "stock_futures")
FUTURES_PRODUCTS: tuple[str, ...] = ("index_futures", "stock_futures")

# Layout of the cost vector handed to the engine (all rates are fractions of turnover).
COST_BROKERAGE_FLAT = 0  # rupees per order; +inf when there is no flat limb
COST_BROKERAGE_RATE = 1  # fraction; +inf when there is no percentage limb
COST_STT_BUY = 2
COST_STT_SELL = 3
COST_EXCHANGE = 4
COST_IPFT = 5
COST_SEBI = 6
COST_STAMP_BUY = 7
COST_DP_SELL = 8  # rupees per sell order
COST_GST = 9  # fraction applied to brokerage + exchange + IPFT + SEBI fee + DP charge
N_COST = 10

# Layout of engine.cost_breakdown's result.
CHARGE_NAMES: tuple[str, ...] = ("brokerage", "stt", "exchange", "ipft", "sebi", "stamp_duty", "dp", "gst", "total")

_CRORE = 1e7


class ProductRates(FrozenConfig):
    """One product's published rates (percent of turnover unless the key says otherwise)."""

    brokerage_flat: float | None = Field(ge=0)
    brokerage_pct: float | None = Field(ge=0)
    stt_buy_pct: float = Field(ge=0)
    stt_sell_pct: float = Field(ge=0)
    exchange_pct: float = Field(ge=0)
    ipft_per_crore: float = Field(ge=0)
    sebi_per_crore: float = Field(ge=0)
    stamp_buy_pct: float = Field(ge=0)
    dp_per_sell_order: float = Field(ge=0)
    gst_pct: float = Field(ge=0)

    @model_validator(mode="after")
    def _some_brokerage(self) -> "ProductRates":
        if self.brokerage_flat is None and self.brokerage_pct is None:
            raise ValueError("set brokerage_flat or brokerage_pct (use 0 for no brokerage)")
        return self

    def vector(self) -> np.ndarray:
        """The engine's cost vector: rates as fractions of turnover, +inf for a missing brokerage limb."""
        v = np.zeros(N_COST, dtype=np.float64)
        v[COST_BROKERAGE_FLAT] = np.inf if self.brokerage_flat is None else self.brokerage_flat
        v[COST_BROKERAGE_RATE] = np.inf if self.brokerage_pct is None else self.brokerage_pct / 100.0
        v[COST_STT_BUY] = self.stt_buy_pct / 100.0
        v[COST_STT_SELL] = self.stt_sell_pct / 100.0
        v[COST_EXCHANGE] = self.exchange_pct / 100.0
        v[COST_IPFT] = self.ipft_per_crore / _CRORE
        v[COST_SEBI] = self.sebi_per_crore / _CRORE
        v[COST_STAMP_BUY] = self.stamp_buy_pct / 100.0
        v[COST_DP_SELL] = self.dp_per_sell_order
        v[COST_GST] = self.gst_pct / 100.0
        return v


class CostSchedule(FrozenConfig):
    """All products' rates from ``effective_from`` on, with the sources they were checked against."""

    effective_from: dt.date
    sources: list[str] = Field(default_factory=list)
    products: dict[Product, ProductRates]

    @model_validator(mode="after")
    def _all_products(self) -> "CostSchedule":
        missing = [p for p in PRODUCTS if p not in self.products]
        if missing:
            raise ValueError(f"schedule {self.effective_from} lacks product(s) {', '.join(missing)}")
        return self


class CostTable(FrozenConfig):
    broker: str
    schedules: list[CostSchedule] = Field(min_length=1)

    def schedule(self, as_of: dt.date | None = None) -> CostSchedule:
        """The latest schedule in force on ``as_of`` (the latest of all when None)."""
        ordered = sorted(self.schedules, key=lambda s: s.effective_from)
        if as_of is None:
            return ordered[-1]
        valid = [s for s in ordered if s.effective_from <= as_of]
        if not valid:
            raise UserInputError(
                f"no cost schedule in force on {as_of}: the earliest starts {ordered[0].effective_from}; "
                "set engine.costs_as_of to a later date or add a schedule to the costs file"
            )
        return valid[-1]


@lru_cache(maxsize=8)
def _load_table(path: str, mtime: float) -> CostTable:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as err:
        raise UserInputError(f"{path}: is not valid YAML ({getattr(err, 'problem', err)})") from None
    return parse_config(CostTable, data, path)


def load_cost_table(path: str | Path | None = None) -> CostTable:
    """Read and validate a costs file (default: the packaged ``envs/costs.yaml``)."""
    p = Path(path) if path is not None else COSTS_FILE
    if not p.is_file():
        raise UserInputError(f"{p}: costs file not found (check engine.costs_file)")
    return _load_table(str(p), p.stat().st_mtime)


def cost_vector(product: str, as_of: dt.date | None = None, path: str | Path | None = None) -> np.ndarray:
    """The engine's float64 cost vector for ``product`` (a fresh copy)."""
    if product not in PRODUCTS:
        raise UserInputError(f"unknown product {product!r}; use one of {', '.join(PRODUCTS)}")
    return load_cost_table(path).schedule(as_of).products[product].vector()


def order_charges(product: str, price: float, qty: float, side: Literal["buy", "sell"],
                  as_of: dt.date | None = None, path: str | Path | None = None) -> dict[str, float]:
    """Every charge on one executed order, in rupees (keys: ``CHARGE_NAMES``), via the engine."""
    from tradebot.envs.engine import cost_breakdown

    if side not in ("buy", "sell"):
        raise UserInputError(f"side must be 'buy' or 'sell', got {side!r}")
    parts = cost_breakdown(cost_vector(product, as_of, path), float(price), float(qty), side == "buy")
    return dict(zip(CHARGE_NAMES, (float(x) for x in parts)))
