"""The canonical bar store: one Parquet file per symbol and bar size.

Layout: ``<root>/<EXCHANGE>_<NAME>/<timeframe>.parquet``, e.g. ``store/NSE_NIFTY50-INDEX/5m.parquet``.
The root is the ``root`` argument, else ``$TRADEBOT_STORE``, else ``./store``. Each file holds the
validated frame (IST ``timestamp`` index, float64 OHLCV) and, in its Parquet key-value metadata
under ``tradebot``, the symbol, bar size and the source files imported into it.

Writing merges with what is stored (rows at new timestamps are added; at a stored timestamp the new
row wins) and is atomic: the merged table goes to a temporary file in the same directory, which then
replaces the old file with ``os.replace``, so a failed write never leaves a half-written store file.
Writers of the same file are serialised with a lock file, so concurrent imports do not lose rows.

    store = Store("store")
    result = store.write(load_bars("data/sample/NSE_NIFTY50-INDEX_5m.csv.gz"), source="sample")
    bars = store.read("NSE:NIFTY50-INDEX", "5m")
    for entry in store.list():
        print(entry.symbol, entry.timeframe, entry.rows, entry.first, entry.last)
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, NamedTuple

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tradebot.features.bars import BAR_COLUMNS, Bars, validate_symbol
from tradebot.features.resample import canonical_timeframe

from tradebot.core.errors import UserInputError
from tradebot.core.files import atomic_writer
from tradebot.core.nse_time import IST, is_intraday, timeframe_minutes

try:  # POSIX advisory locks; without them (Windows) writes are still atomic, just not serialised
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

STORE_ENV = "TRADEBOT_STORE"
DEFAULT_ROOT = "store"
METADATA_KEY = b"tradebot"
_LOCK_NAME = ".lock"


class StoreEntry(NamedTuple):
    """One stored series, as listed by ``Store.list()`` (its file: ``Store.path(symbol, timeframe)``)."""

    symbol: str
    timeframe: str
    rows: int
    first: pd.Timestamp | None
    last: pd.Timestamp | None


@dataclass(frozen=True)
class WriteResult:
    """What a ``Store.write`` did: ``added`` new timestamps, ``replaced`` stored ones, ``rows`` in total now."""

    path: Path
    symbol: str
    timeframe: str
    written: int
    added: int
    replaced: int
    rows: int
    created: bool


def default_root() -> Path:
    return Path(os.environ.get(STORE_ENV) or DEFAULT_ROOT)


def symbol_dir_name(symbol: str) -> str:
    """``NSE:NIFTY50-INDEX`` -> ``NSE_NIFTY50-INDEX`` (the shared data's file-name convention)."""
    return validate_symbol(symbol).replace(":", "_", 1)


class Store:
    """A directory of Parquet bar files, one per (symbol, timeframe)."""

    def __init__(self, root: str | os.PathLike[str] | None = None):
        self.root = Path(root) if root is not None else default_root()

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    def path(self, symbol: str, timeframe: str) -> Path:
        """Where the bars of ``symbol`` at ``timeframe`` are (or would be) stored."""
        return self.root / symbol_dir_name(symbol) / f"{canonical_timeframe(timeframe)}.parquet"

    # ---------------------------------------------------------------- write
    def write(self, bars: Bars, source: str | None = None) -> WriteResult:
        """Merge ``bars`` into the store file of its symbol and bar size (new rows win), atomically."""
        if not bars.symbol:
            raise UserInputError("bars have no symbol; give one in Fyers form, e.g. NSE:NIFTY50-INDEX")
        timeframe = canonical_timeframe(bars.timeframe)
        path = self.path(bars.symbol, timeframe)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserInputError(f"{path.parent}: cannot create the store directory ({err.strerror or err}); "
                                 "check the --store path and its permissions") from None
        new = bars.frame.loc[:, list(BAR_COLUMNS)]
        with self._locked(path.parent):
            created = not path.exists()
            sources: list[str] = []
            if created:
                merged, replaced = new, 0
            else:
                old, meta = self._read_frame(path)
                self._check_identity(path, meta, bars.symbol, timeframe)
                sources = list(meta.get("sources", []))
                overlap = old.index.isin(new.index)
                replaced = int(overlap.sum())
                merged = pd.concat([old[~overlap], new]).sort_index(kind="stable")
            if source:
                sources = [s for s in sources if s != source] + [source]
            meta = {
                "symbol": bars.symbol,
                "timeframe": timeframe,
                "sources": sources,
                "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            self._write_atomic(path, merged, meta)
        return WriteResult(path=path, symbol=bars.symbol, timeframe=timeframe, written=len(new),
                           added=len(new) - replaced, replaced=replaced, rows=len(merged), created=created)

    # ---------------------------------------------------------------- read
    def read(self, symbol: str, timeframe: str) -> Bars:
        """The stored bars of ``symbol`` at ``timeframe`` (validated; tz and dtypes as written)."""
        path = self.path(symbol, timeframe)
        if not path.is_file():
            raise UserInputError(f"{path}: no {canonical_timeframe(timeframe)} bars of {symbol} in store {self.root} "
                                 "(import them with: tradebot data import FILE --symbol SYMBOL)")
        frame, meta = self._read_frame(path)
        self._check_identity(path, meta, symbol, canonical_timeframe(timeframe))
        return Bars.from_frame(frame, symbol=symbol, source=str(path), timeframe=canonical_timeframe(timeframe))

    def metadata(self, symbol: str, timeframe: str) -> dict:
        """The ``tradebot`` metadata of a stored file: symbol, timeframe, sources, updated."""
        return self._read_meta(self.path(symbol, timeframe))

    # ---------------------------------------------------------------- list
    def list(self) -> list[StoreEntry]:
        """Every stored series, sorted by symbol then bar size."""
        entries: list[StoreEntry] = []
        if not self.root.is_dir():
            return entries
        for path in sorted(self.root.glob("*/*.parquet")):
            meta = self._read_meta(path)
            symbol = meta.get("symbol") or path.parent.name.replace("_", ":", 1)
            timeframe = meta.get("timeframe") or path.stem
            try:
                ts = pq.read_table(path, columns=["timestamp"]).column("timestamp").to_pandas()
            except (OSError, pa.ArrowException, KeyError) as err:
                raise UserInputError(f"{path}: not a readable store file ({err}); move it out of the store") from None
            first = ts.min().tz_convert(IST) if len(ts) else None
            last = ts.max().tz_convert(IST) if len(ts) else None
            entries.append(StoreEntry(symbol, timeframe, len(ts), first, last))
        return sorted(entries, key=lambda e: (e.symbol, _tf_order(e.timeframe)))

    # ---------------------------------------------------------------- internals
    @staticmethod
    def _read_meta(path: Path) -> dict:
        try:
            raw = (pq.read_schema(path).metadata or {}).get(METADATA_KEY)
        except (OSError, pa.ArrowException) as err:
            raise UserInputError(f"{path}: not a readable store file ({err}); move it out of the store") from None
        if raw is None:
            return {}
        try:
            meta = json.loads(raw)
        except ValueError:
            return {}
        return meta if isinstance(meta, dict) else {}

    def _read_frame(self, path: Path) -> tuple[pd.DataFrame, dict]:
        try:
            table = pq.read_table(path)
            frame = table.to_pandas()
        except (OSError, pa.ArrowException, ValueError) as err:
            raise UserInputError(f"{path}: store file cannot be read ({str(err).splitlines()[0][:120]}); "
                                 "move it away and import the data again") from None
        if "timestamp" in frame.columns:
            frame = frame.set_index("timestamp")
        missing = [c for c in BAR_COLUMNS if c not in frame.columns]
        if missing or not isinstance(frame.index, pd.DatetimeIndex) or frame.index.tz is None:
            raise UserInputError(f"{path}: not a tradebot store file (needs a tz-aware timestamp index and "
                                 f"{','.join(BAR_COLUMNS)}); move it away and import the data again")
        frame.index = frame.index.tz_convert(IST).rename("timestamp")
        return frame.loc[:, list(BAR_COLUMNS)], self._read_meta(path)

    @staticmethod
    def _check_identity(path: Path, meta: dict, symbol: str, timeframe: str) -> None:
        for key, want in (("symbol", symbol), ("timeframe", timeframe)):
            got = meta.get(key)
            if got is not None and got != want:
                raise UserInputError(f"{path}: holds {key} {got!r}, not {want!r}; the store file was moved or "
                                     "renamed by hand: put it back under its own name")

    @staticmethod
    def _write_atomic(path: Path, frame: pd.DataFrame, meta: dict) -> None:
        table = pa.Table.from_pandas(frame, preserve_index=True)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               METADATA_KEY: json.dumps(meta).encode()})
        try:
            with atomic_writer(path) as fh:
                pq.write_table(table, fh)
        except OSError as err:
            raise UserInputError(f"{path}: cannot write the store file ({err.strerror or err}); "
                                 "the store is unchanged; check free space and permissions") from None
            raise
        with contextlib.suppress(OSError):  # make the rename itself durable
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    @staticmethod
    @contextlib.contextmanager
    def _locked(directory: Path) -> Iterator[None]:
        if fcntl is None:  # pragma: no cover
            yield
            return
        with open(directory / _LOCK_NAME, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _tf_order(timeframe: str) -> int:
    """Sort key: intraday bar sizes by length, then daily, then anything unrecognised."""
    try:
        return timeframe_minutes(timeframe) if is_intraday(timeframe) else 10**6
    except ValueError:
        return 10**7
