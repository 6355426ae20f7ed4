"""Import a bar file into the canonical store: validate (or repair), optionally resample, merge."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tradebot.core.errors import UserInputError
from tradebot.features.bars import Bars, read_bar_file, symbol_from_filename, validate_symbol
from tradebot.features.quality import repair_bars
from tradebot.features.resample import canonical_timeframe, resample
from tradebot.features.store import Store, WriteResult


@dataclass(frozen=True)
class ImportResult:
    """What an import did: the store write, the bar sizes, and the lines to show the user."""

    symbol: str
    source_timeframe: str
    resampled: bool
    written: WriteResult
    repairs: tuple[str, ...] = ()   # one line per kind of repaired row (--repair)
    warnings: tuple[str, ...] = field(default=())


def import_bar_file(path: Path, symbol: str | None = None, timeframe: str | None = None,
                    store_dir: Path | None = None, repair: bool = False) -> ImportResult:
    """Validate the bar file ``path`` (or repair it), resample it to ``timeframe`` when given, and merge
    it into the store. Raises ``UserInputError`` before touching the store when anything is wrong."""
    symbol = symbol or symbol_from_filename(path)
    if not symbol:
        raise UserInputError(f"{path}: cannot tell the symbol from the file name; give --symbol in Fyers form "
                             "(e.g. --symbol NSE:NIFTY50-INDEX)")
    validate_symbol(symbol)
    target = canonical_timeframe(timeframe) if timeframe else None
    warnings: list[str] = []
    named = symbol_from_filename(path)
    if named and named != symbol:
        warnings.append(f"{path}: file name suggests {named}, imported as {symbol}")

    raw = read_bar_file(path)
    is_csv = path.suffix.lower() not in (".parquet", ".pq")
    fixes = None
    if repair:
        raw, fixes = repair_bars(raw, str(path))
    bars = Bars.from_frame(raw, symbol=symbol, source=str(path), first_line=2 if is_csv and not repair else None)
    source_tf = canonical_timeframe(bars.timeframe)
    if target is not None:
        try:
            result = resample(bars, target)
        except UserInputError as err:
            raise UserInputError(f"{path}: {err}") from None
        bars, dropped = result.bars, result.dropped_outside_session
        if dropped:
            warnings.append(f"{path}: dropped {dropped:,} bar(s) outside the session 09:15–15:30 IST "
                            "while resampling")
    done = Store(store_dir).write(bars, source=str(path))
    return ImportResult(symbol=symbol, source_timeframe=source_tf, resampled=bool(target and target != source_tf),
                        written=done, repairs=tuple(fixes.lines()) if fixes is not None else (),
                        warnings=tuple(warnings))
