"""The fill engine's settings (``EngineConfig``, YAML section ``engine``) and their parameter vector.

``EngineConfig.params()`` is how the settings reach the numba kernels of ``tradebot.envs.engine``:
one float64 vector in the ``P_*`` layout below. ``load_engine_config`` reads the ``engine`` section
of a YAML file, the way ``tradebot backtest --config`` does.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import Field, field_validator, model_validator

from tradebot.core.config import FrozenConfig, load_config
from tradebot.core.errors import UserInputError
from tradebot.core.nse_time import SESSION_CLOSE_MINUTE, SESSION_OPEN_MINUTE, hhmm_minute
from tradebot.envs.costs import N_COST, Product, cost_vector

CONFIG_SECTION = "engine"

# The parameter vector. The kernels of tradebot.envs.engine read it at compile time and numba's
# cache only watches a kernel's own file: after changing this layout, touch engine.py too.
(P_INITIAL_CASH, P_RISK, P_STOP_MULT, P_USE_STOP, P_TP_MULT, P_USE_TP, P_SLIP_BPS, P_SLIP_ATR,
 P_LEVERAGE, P_LOT, P_MAX_NOTIONAL, P_ALLOW_SHORT, P_FIXED_QTY, P_FLAT_AT_SESSION_END, P_EXPOSURE) = range(15)
N_PARAMS = 15
CATALOG = "catalog"  # a value taken from the instrument catalog (tradebot.envs.instruments)
FUTURES = "futures"  # product: index_futures or stock_futures, by the catalog's kind of the symbol

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class EngineConfig(FrozenConfig):
    """Simulation settings (YAML section ``engine``). Money is in rupees.

    Defaults model a Fyers MIS (intraday) account on NSE cash equity: Rs 10,00,000, risk 1 % of
    equity per trade with the stop 2 ATR away, take-profit at 3 ATR, slippage 1 bp + 0.02 ATR,
    5x intraday leverage, square-off at 15:15 IST, shorting allowed, full NSE charges.
    """

    initial_cash: float = Field(1_000_000.0, gt=0, description="starting cash (rupees)")
    product: Product | Literal["futures"] = Field(
        "equity_intraday", description="equity_intraday (MIS) | equity_delivery (CNC) | index_futures | stock_futures | "
        "futures (index or stock futures by the instrument catalog); futures carry overnight (NRML) with carry_overnight")
    risk_per_trade: float = Field(0.01, gt=0, le=1, description="fraction of equity lost if the stop is hit")
    stop_atr_mult: float = Field(2.0, gt=0, description="stop distance in ATRs of the decision bar (also the sizing distance)")
    stop_loss: bool = Field(True, description="attach a stop-loss order to every entry")
    take_profit_atr_mult: float | None = Field(3.0, gt=0, description="take-profit distance in ATRs; null: none")
    slippage_bps: float = Field(1.0, ge=0, description="market-order slippage in basis points of price")
    slippage_atr: float = Field(0.02, ge=0, description="plus this fraction of the last known ATR")
    leverage: float | Literal["catalog"] = Field(
        5.0, description="notional <= leverage x equity (intraday / futures margin); delivery uses 1; catalog: "
        "1 / the futures margin of the instrument catalog")
    lot_size: int | Literal["catalog"] = Field(
        1, description="quantities are whole multiples of this (shares, or units per futures lot); catalog: the "
        "futures lot in force on the first traded date, from the instrument catalog")
    exposure: float | None = Field(None, gt=0, description="size every entry at this notional, as a multiple of "
                                   "equity (1.0: fully invested), instead of risk sizing; still capped by leverage")
    max_notional: float | None = Field(None, gt=0, description="cap on one position's notional (rupees); null: none")
    fixed_qty: int | None = Field(None, ge=1, description="trade this many units (rounded down to lots) instead of risk sizing")
    square_off: str | None = Field("15:15", description="HH:MM IST: intraday positions close at the open of the first bar starting at/after it")
    carry_overnight: bool | None = Field(None, description="hold positions across sessions; null: only for equity_delivery")
    allow_short: bool = Field(True, description="allow SELL_SHORT (never for equity_delivery)")
    costs: bool = Field(True, description="charge the NSE costs of envs/costs.yaml")
    costs_file: str | None = Field(None, description="another costs YAML; null: the packaged envs/costs.yaml")
    costs_as_of: dt.date | None = Field(None, description="use the cost schedule in force on this date; null: the latest")
    atr_period: int = Field(14, ge=1, description="ATR length when the caller gives no ATR")

    @field_validator("square_off")
    @classmethod
    def _check_square_off(cls, v: str | None) -> str | None:
        if v is None:
            return v
        m = _HHMM.match(v)
        if not m:
            raise ValueError("use HH:MM (IST), e.g. '15:15'")
        minute = int(m.group(1)) * 60 + int(m.group(2))
        if not SESSION_OPEN_MINUTE < minute <= SESSION_CLOSE_MINUTE:
            raise ValueError("must lie inside the NSE session, after 09:15 and no later than 15:30")
        return v

    @field_validator("leverage")
    @classmethod
    def _positive_leverage(cls, v: float | str) -> float | str:
        if v != CATALOG and not v > 0:
            raise ValueError("must be > 0 (or 'catalog')")
        return v

    @field_validator("lot_size")
    @classmethod
    def _positive_lot(cls, v: int | str) -> int | str:
        if v != CATALOG and not v >= 1:
            raise ValueError("must be >= 1 (or 'catalog')")
        return v

    @model_validator(mode="after")
    def _check_product(self) -> "EngineConfig":
        if self.product == "equity_intraday" and self.carry_overnight:
            raise ValueError("equity_intraday positions cannot be carried overnight; "
                             "use product equity_delivery or futures (NRML), or drop carry_overnight")
        return self

    @property
    def resolved(self) -> bool:
        """Whether every per-instrument value is set (nothing left to the instrument catalog)."""
        return CATALOG not in (self.lot_size, self.leverage) and self.product != FUTURES

    def for_instrument(self, symbol: str | None, on: dt.date | None = None) -> "EngineConfig":
        """This config with the catalog's values for ``symbol`` on date ``on`` (None: the latest lot):
        ``product: futures`` -> the symbol's futures product, ``lot_size: catalog`` -> the futures lot in
        force, ``leverage: catalog`` -> 1 / the futures margin. A resolved config is returned as is."""
        if self.resolved:
            return self
        from tradebot.envs.instruments import load_catalog

        catalog = load_catalog()
        update: dict[str, object] = {}
        if self.product == FUTURES:
            update["product"] = catalog.get(symbol, "engine.product 'futures'").futures_product
        if self.lot_size == CATALOG:
            update["lot_size"] = catalog.futures(symbol, "engine.lot_size").lot_on(on)
        if self.leverage == CATALOG:
            update["leverage"] = 100.0 / catalog.futures(symbol, "engine.leverage").margin_pct
        return self.model_copy(update=update)

    def _require_resolved(self) -> None:
        if not self.resolved:
            raise UserInputError("the engine config leaves product/lot_size/leverage to the instrument catalog; "
                                 "resolve it for the traded symbol first (EngineConfig.for_instrument)")

    @property
    def flat_at_session_end(self) -> bool:
        carry = self.carry_overnight if self.carry_overnight is not None else self.product == "equity_delivery"
        return not carry

    @property
    def effective_leverage(self) -> float:
        if self.product == "equity_delivery":
            return 1.0
        self._require_resolved()
        return float(self.leverage)

    @property
    def shorts_allowed(self) -> bool:
        return bool(self.allow_short) and self.product != "equity_delivery"

    @property
    def needs_atr(self) -> bool:
        """Whether sizing, stops, take-profits or slippage read the ATR."""
        return ((self.fixed_qty is None and self.exposure is None) or self.stop_loss or self.take_profit_atr_mult is not None
                or self.slippage_atr > 0)

    @property
    def square_off_minute(self) -> int | None:
        if self.square_off is None or not self.flat_at_session_end:
            return None
        return hhmm_minute(self.square_off)

    @classmethod
    def frictionless(cls, fixed_qty: int, **overrides) -> "EngineConfig":
        """Next-open fills of a fixed size with no costs, slippage, stops or square-off (delivery, long only)."""
        base = dict(product="equity_delivery", costs=False, slippage_bps=0.0, slippage_atr=0.0, fixed_qty=fixed_qty,
                    stop_loss=False, take_profit_atr_mult=None, allow_short=False, square_off=None)
        base.update(overrides)
        return cls(**base)

    @classmethod
    def from_yaml(cls, path: str | Path, section: str = "engine") -> "EngineConfig":
        return load_config(cls, path, section)

    def params(self) -> np.ndarray:
        """The engine's float64 parameter vector (``P_*`` layout)."""
        self._require_resolved()
        p = np.zeros(N_PARAMS, dtype=np.float64)
        p[P_INITIAL_CASH] = self.initial_cash
        p[P_RISK] = self.risk_per_trade
        p[P_STOP_MULT] = self.stop_atr_mult
        p[P_USE_STOP] = 1.0 if self.stop_loss else 0.0
        p[P_TP_MULT] = self.take_profit_atr_mult if self.take_profit_atr_mult is not None else 0.0
        p[P_USE_TP] = 1.0 if self.take_profit_atr_mult is not None else 0.0
        p[P_SLIP_BPS] = self.slippage_bps * 1e-4
        p[P_SLIP_ATR] = self.slippage_atr
        p[P_LEVERAGE] = self.effective_leverage
        p[P_LOT] = float(self.lot_size)
        p[P_MAX_NOTIONAL] = self.max_notional if self.max_notional is not None else np.inf
        p[P_ALLOW_SHORT] = 1.0 if self.shorts_allowed else 0.0
        p[P_FIXED_QTY] = float(self.fixed_qty) if self.fixed_qty is not None else 0.0
        p[P_FLAT_AT_SESSION_END] = 1.0 if self.flat_at_session_end else 0.0
        p[P_EXPOSURE] = self.exposure if self.exposure is not None else 0.0
        return p

    def cost_vector(self) -> np.ndarray:
        """The product's NSE cost vector, or zeros when ``costs`` is off."""
        if not self.costs:
            return np.zeros(N_COST, dtype=np.float64)
        self._require_resolved()
        return cost_vector(self.product, self.costs_as_of, self.costs_file)


def load_engine_config(path: Path | None, base: EngineConfig | None = None) -> EngineConfig:
    """``EngineConfig`` from the YAML file's ``engine`` section (defaults without a file).

    With ``base``, only the keys the file's section sets replace ``base``'s (the other settings stay).
    Unknown keys inside ``engine`` are rejected by the config class; a top-level key that looks like
    a misspelt ``engine`` is rejected too (it would otherwise be silently ignored).
    """
    if path is None:
        return base if base is not None else EngineConfig()
    if path.is_file():
        try:
            data = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError):
            data = None  # load_config reports the syntax error with its line
        if isinstance(data, dict) and CONFIG_SECTION not in data:
            close = difflib.get_close_matches(CONFIG_SECTION, [str(k) for k in data], n=1, cutoff=0.6)
            if close:
                raise UserInputError(f"{path}: unknown config section '{close[0]}' (did you mean '{CONFIG_SECTION}'?)")
        elif data is not None and not isinstance(data, dict):
            raise UserInputError(f"{path}: expected a mapping with an '{CONFIG_SECTION}:' section, "
                                 f"got {type(data).__name__}")
    given = load_config(EngineConfig, path, CONFIG_SECTION)
    if base is None:
        return given
    values = {**base.model_dump(), **given.model_dump(include=set(given.model_fields_set))}
    try:
        return EngineConfig.model_validate(values)
    except ValueError as err:
        raise UserInputError(f"{path} [{CONFIG_SECTION}]: {str(err).splitlines()[-1].strip()}") from None
