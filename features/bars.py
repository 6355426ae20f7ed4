"""Validated OHLCV bars: read once at the boundary, typed and trusted inside.

Input: CSV, CSV.gz or Parquet with ``timestamp,open,high,low,close,volume``; timestamps must carry a
UTC offset (ISO 8601, e.g. ``2021-01-01T09:15:00+05:30``). Inside the project bars are a ``Bars``
object whose frame is indexed by IST timestamps, sorted, unique, with positive consistent prices.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tradebot.core.errors import UserInputError
from tradebot.core.nse_time import IST, detect_timeframe

BAR_COLUMNS = ("open", "high", "low", "close", "volume")
PRICE_COLUMNS = ("open", "high", "low", "close")
REQUIRED_COLUMNS = ("timestamp",) + BAR_COLUMNS
SYMBOL_RE = re.compile(r"^(NSE|BSE|MCX|NFO|BFO|CDS|BCD|CRYPTO|FX):[A-Z0-9&_.\-]+$")
_FILE_SYMBOL_RE = re.compile(r"^([A-Z]+)_(.+?)_(\d+[mhd])(?:\.(?:csv|csv\.gz|parquet))?$")


def validate_symbol(symbol: str) -> str:
    """Accept Fyers-form symbols such as ``NSE:SBIN-EQ`` or ``NSE:NIFTY50-INDEX``."""
    if not SYMBOL_RE.match(symbol or ""):
        raise UserInputError(
            f"symbol {symbol!r} is not in Fyers form EXCHANGE:NAME (e.g. NSE:SBIN-EQ, NSE:NIFTY50-INDEX)"
        )
    return symbol


def symbol_from_filename(path: str | Path) -> str | None:
    """``NSE_SBIN-EQ_1d.csv.gz`` -> ``NSE:SBIN-EQ``; None when the name does not follow the convention."""
    m = _FILE_SYMBOL_RE.match(Path(path).name)
    return f"{m.group(1)}:{m.group(2)}" if m else None


# Written-out missing values: read as NaN (a quality problem for the report), not as unreadable text.
_NA_TOKENS = frozenset({"nan", "-nan", "na", "n/a", "#n/a", "null", "none"})


def _line(pos: int) -> int:
    """File line of data row ``pos`` (0-based) in a CSV with a header line."""
    return pos + 2


def _where(path: str, pos: int, is_parquet: bool) -> str:
    return f"{path}: row {pos + 1}" if is_parquet else f"{path}: line {_line(pos)}"


def read_bar_file(path: str | Path) -> pd.DataFrame:
    """Parse a bar file structurally, without judging its quality.

    Returns a frame with a tz-aware (IST) ``timestamp`` column and float ``open..volume`` columns in
    file order (NaN, duplicates and unsorted rows are kept, for the quality report to find). Raises
    ``UserInputError`` when the file cannot be read as bars at all.
    """
    path = Path(path)
    name = str(path)
    if not path.exists():
        raise UserInputError(f"{name}: file not found (check the path)")
    if path.is_dir():
        raise UserInputError(f"{name}: is a directory, expected a CSV, CSV.gz or Parquet bar file")
    is_parquet = path.suffix.lower() in (".parquet", ".pq")
    try:
        if is_parquet:
            df = pd.read_parquet(path)
            if "timestamp" not in df.columns and isinstance(df.index, pd.DatetimeIndex):
                df = df.reset_index(names="timestamp")
        else:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], skipinitialspace=True)
    except pd.errors.EmptyDataError:  # a ValueError subclass: must come first
        raise UserInputError(f"{name}: file is empty; expected a header {','.join(REQUIRED_COLUMNS)} and rows of bars") from None
    except (UnicodeDecodeError, pd.errors.ParserError, OSError, ValueError, EOFError) as err:
        kind = "Parquet" if is_parquet else "CSV"
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise UserInputError(f"{name}: cannot be read as {kind} bars ({reason}); expected columns {','.join(REQUIRED_COLUMNS)}") from None

    df.columns = [str(c).strip().lower() for c in df.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        found = ",".join(str(c) for c in df.columns[:8]) or "<none>"
        raise UserInputError(
            f"{name}: missing column(s) {', '.join(missing)}; found {found}. "
            f"Rename the header to {','.join(REQUIRED_COLUMNS)}"
        )
    if len(df) == 0:
        raise UserInputError(f"{name}: no rows of bars after the header")

    ts = _parse_timestamps(df["timestamp"], name, is_parquet)
    out = pd.DataFrame({"timestamp": ts})
    for col in BAR_COLUMNS:
        raw = df[col]
        values = pd.to_numeric(raw, errors="coerce")
        text = raw.astype(str).str.strip()
        bad = values.isna() & raw.notna() & (text != "") & ~text.str.lower().isin(_NA_TOKENS)
        if bad.any():
            pos = int(np.flatnonzero(bad.to_numpy())[0])
            raise UserInputError(
                f"{_where(name, pos, is_parquet)}: '{col}' value {str(raw.iloc[pos])[:30]!r} is not a number"
            )
        out[col] = values.astype("float64").to_numpy()
    return out


def _parse_timestamps(raw: pd.Series, name: str, is_parquet: bool) -> pd.Series:
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        return raw.dt.tz_convert(IST).reset_index(drop=True)
    if pd.api.types.is_datetime64_any_dtype(raw.dtype):
        raise UserInputError(
            f"{name}: timestamps have no time zone; store them with an offset (e.g. 2021-01-01T09:15:00+05:30)"
        )
    text = raw.astype(str).str.strip()
    empty = raw.isna() | (text == "")
    if empty.any():
        pos = int(np.flatnonzero(empty.to_numpy())[0])
        raise UserInputError(f"{_where(name, pos, is_parquet)}: empty timestamp (every row needs one)")
    has_offset = text.str.contains(r"(?:[+-]\d{2}:?\d{2}|Z)$", regex=True)
    try:
        parsed = pd.to_datetime(text, format="ISO8601", utc=True)
    except (ValueError, TypeError):
        parsed = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
        bad = parsed.isna().to_numpy()
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise UserInputError(
                f"{_where(name, pos, is_parquet)}: cannot parse timestamp {text.iloc[pos][:40]!r}; "
                "use ISO 8601 with an offset, e.g. 2021-01-01T09:15:00+05:30"
            ) from None
        raise UserInputError(
            f"{name}: cannot parse the timestamps (mixed or unsupported formats); "
            "use ISO 8601 with an offset, e.g. 2021-01-01T09:15:00+05:30"
        ) from None
    if not has_offset.all():
        pos = int(np.flatnonzero(~has_offset.to_numpy())[0])
        raise UserInputError(
            f"{_where(name, pos, is_parquet)}: timestamp {text.iloc[pos][:40]!r} has no time zone; "
            "add the offset (e.g. +05:30 for IST)"
        )
    return parsed.dt.tz_convert(IST)


@dataclass(frozen=True)
class Bars:
    """A validated bar series: IST DatetimeIndex (sorted, unique), float64 OHLCV, positive, consistent."""

    frame: pd.DataFrame
    symbol: str | None
    timeframe: str

    @classmethod
    def from_frame(cls, df: pd.DataFrame, symbol: str | None = None, source: str = "bars",
                   timeframe: str | None = None, first_line: int | None = None) -> "Bars":
        """Validate strictly; the first problem is raised as one line naming the row and the fix.

        ``first_line``: the file line of the first row (2 for a CSV with a header), so that messages
        name file lines; otherwise they name the bar's position.
        """
        if "timestamp" in df.columns:
            df = df.set_index("timestamp")
        if not isinstance(df.index, pd.DatetimeIndex) or df.index.tz is None:
            raise UserInputError(f"{source}: bars need a time-zone-aware timestamp index")
        missing = [c for c in BAR_COLUMNS if c not in df.columns]
        if missing:
            raise UserInputError(f"{source}: missing column(s) {', '.join(missing)}")
        if len(df) == 0:
            raise UserInputError(f"{source}: no bars")
        frame = df.loc[:, list(BAR_COLUMNS)].astype("float64")
        frame.index = df.index.tz_convert(IST).rename("timestamp")
        def where(pos: int) -> str:
            place = f"line {pos + first_line}" if first_line is not None else f"row {pos + 1}"
            return f"{source}: {place} ({frame.index[pos].isoformat()})"

        prices = frame[list(PRICE_COLUMNS)].to_numpy()
        nan_rows = np.flatnonzero(~np.isfinite(prices).all(axis=1) | ~np.isfinite(frame["volume"].to_numpy()))
        if len(nan_rows):
            raise UserInputError(f"{where(nan_rows[0])}: NaN or infinite value ({len(nan_rows)} such rows); "
                                 "fill or drop them, or import with --repair")
        bad = np.flatnonzero((prices <= 0).any(axis=1))
        if len(bad):
            raise UserInputError(f"{where(bad[0])}: non-positive price ({len(bad)} such rows); "
                                 "fix or drop them, or import with --repair")
        if (frame["volume"].to_numpy() < 0).any():
            pos = int(np.flatnonzero(frame["volume"].to_numpy() < 0)[0])
            raise UserInputError(f"{where(pos)}: negative volume; fix or drop the row")
        ns = frame.index.asi8
        if len(ns) > 1:
            d = np.diff(ns)
            if (d == 0).any():
                pos = int(np.flatnonzero(d == 0)[0]) + 1
                raise UserInputError(f"{where(pos)}: duplicate timestamp; drop duplicates, or import with --repair")
            if (d < 0).any():
                pos = int(np.flatnonzero(d < 0)[0]) + 1
                raise UserInputError(f"{where(pos)}: timestamp earlier than the bar before it; "
                                     "sort the file by timestamp, or import with --repair")
        o, h, lo, c = prices.T
        incons = np.flatnonzero((h < np.maximum(o, c)) | (lo > np.minimum(o, c)) | (h < lo))
        if len(incons):
            raise UserInputError(f"{where(incons[0])}: inconsistent OHLC (high below open/close or low above them; "
                                 f"{len(incons)} such rows); fix the source, or import with --repair")
        if symbol is not None:
            validate_symbol(symbol)
        return cls(frame=frame, symbol=symbol, timeframe=timeframe or detect_timeframe(frame.index))

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def index(self) -> pd.DatetimeIndex:
        return self.frame.index

    @property
    def has_volume(self) -> bool:
        """False for index bars (NIFTY etc. report volume 0): volume features are skipped then."""
        return bool((self.frame["volume"].to_numpy() > 0).mean() > 0.5)

    def column(self, name: str) -> np.ndarray:
        return self.frame[name].to_numpy()

    def slice(self, start: int | None = None, stop: int | None = None) -> "Bars":
        return Bars(frame=self.frame.iloc[start:stop], symbol=self.symbol, timeframe=self.timeframe)

    def between(self, start: str | pd.Timestamp | None = None, end: str | pd.Timestamp | None = None) -> "Bars":
        """Bars with start <= timestamp < end (dates are read as IST)."""
        idx = self.frame.index
        mask = np.ones(len(idx), dtype=bool)
        if start is not None:
            mask &= idx >= _ist(start)
        if end is not None:
            mask &= idx < _ist(end)
        return Bars(frame=self.frame[mask], symbol=self.symbol, timeframe=self.timeframe)


def _ist(value: str | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize(IST) if ts.tzinfo is None else ts.tz_convert(IST)


def load_bars(path: str | Path, symbol: str | None = None) -> Bars:
    """Read and strictly validate a bar file (CSV, CSV.gz or Parquet)."""
    raw = read_bar_file(path)
    symbol = symbol or symbol_from_filename(path)
    is_csv = Path(path).suffix.lower() not in (".parquet", ".pq")
    return Bars.from_frame(raw, symbol=symbol, source=str(path), first_line=2 if is_csv else None)
