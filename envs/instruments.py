"""The instrument catalog (``envs/instruments.yaml``): per symbol, its kind, futures lots and margin.

An engine config can leave the per-instrument numbers to the catalog: ``lot_size: catalog`` (the
futures lot in force on the trading date), ``leverage: catalog`` (1 / the futures margin) and
``product: futures`` (``index_futures`` for an index, ``stock_futures`` for a stock).
``EngineConfig.for_instrument(symbol, on)`` resolves them; the env, the backtester and the baselines
call it with the bars' symbol and the first traded date, so one config serves several instruments,
each with its own costs, lot and margin.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, model_validator

from tradebot.core.config import FrozenConfig, parse_config
from tradebot.core.errors import UserInputError

CATALOG_FILE = Path(__file__).with_name("instruments.yaml")


class LotEntry(FrozenConfig):
    from_: dt.date = Field(alias="from", description="first day the near-month contract trades this lot")
    lot: int = Field(ge=1)
    source: str = Field(min_length=1)


class FuturesSpec(FrozenConfig):
    margin_pct: float = Field(gt=0, le=100, description="initial margin, percent of the contract value")
    margin_source: str = Field(min_length=1)
    lots: list[LotEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _dated_in_order(self) -> "FuturesSpec":
        days = [e.from_ for e in self.lots]
        if days != sorted(days) or len(set(days)) != len(days):
            raise ValueError("futures.lots must be in date order, one entry per date")
        return self

    def lot_on(self, day: dt.date | None) -> int:
        """The lot in force on ``day`` (None: the latest; before the first entry: the first)."""
        if day is None:
            return self.lots[-1].lot
        lot = self.lots[0].lot
        for entry in self.lots:
            if entry.from_ <= day:
                lot = entry.lot
        return lot


class Instrument(FrozenConfig):
    kind: Literal["index", "stock"]
    futures: FuturesSpec | None = None

    @property
    def futures_product(self) -> str:
        return "index_futures" if self.kind == "index" else "stock_futures"


class Catalog(FrozenConfig):
    instruments: dict[str, Instrument]

    def get(self, symbol: str | None, what: str) -> Instrument:
        if not symbol:
            raise UserInputError(f"{what} comes from the instrument catalog, which needs the bars' symbol; "
                                 "name the file like NSE_SBIN-EQ_1d.csv.gz or pass the symbol")
        try:
            return self.instruments[symbol]
        except KeyError:
            raise UserInputError(f"{symbol} is not in the instrument catalog ({CATALOG_FILE.name}; it has "
                                 f"{', '.join(sorted(self.instruments))}); set {what} in the engine config "
                                 "or add the symbol to the catalog with its sources") from None

    def futures(self, symbol: str | None, what: str) -> FuturesSpec:
        spec = self.get(symbol, what).futures
        if spec is None:
            raise UserInputError(f"{symbol} has no futures in the instrument catalog; set {what} in the engine config")
        return spec


@lru_cache(maxsize=4)
def _load(path: str, mtime: float) -> Catalog:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as err:
        raise UserInputError(f"{path}: is not valid YAML ({getattr(err, 'problem', err)})") from None
    return parse_config(Catalog, data, path)


def load_catalog(path: str | Path | None = None) -> Catalog:
    """The validated catalog (default: the packaged ``envs/instruments.yaml``)."""
    p = Path(path) if path is not None else CATALOG_FILE
    if not p.is_file():
        raise UserInputError(f"{p}: instrument catalog not found")
    return _load(str(p), p.stat().st_mtime)
