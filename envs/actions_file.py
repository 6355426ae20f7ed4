"""An action file: the decisions of your own strategy, to backtest with ``tradebot backtest --actions``.

A CSV with a header ``timestamp,action``: one row per decision, the bar's own (start) timestamp in
ISO 8601 with its offset, and an action name (``HOLD``, ``BUY_LONG``, ``SELL_SHORT``, ``CLOSE_LONG``,
``CLOSE_SHORT``; any case). Bars without a row hold. A decision at bar t fills at bar t+1's open.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tradebot.core.errors import UserInputError
from tradebot.envs.backtest import BacktestResult
from tradebot.envs.engine import Action
from tradebot.envs.engine_config import EngineConfig
from tradebot.envs.window import BacktestWindow
from tradebot.features.bars import Bars


def read_actions_csv(path: Path, bars: Bars) -> np.ndarray:
    """Actions from a ``timestamp,action`` CSV, aligned to ``bars`` (bars without a row: HOLD).

    Action names are ``HOLD, BUY_LONG, SELL_SHORT, CLOSE_LONG, CLOSE_SHORT`` (case-insensitive).
    Timestamps are ISO 8601 with an offset and must be bar (start) timestamps of the data; rows may
    come in any order. Every problem is one ``UserInputError`` naming the CSV line.
    """
    names_valid = tuple(a.name for a in Action)
    name = str(path)
    if not path.is_file():
        raise UserInputError(f"{name}: actions file not found (check the path)")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise UserInputError(f"{name}: file is empty; expected a header timestamp,action and one row per decision") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as err:
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise UserInputError(f"{name}: cannot be read as CSV ({reason}); expected columns timestamp,action") from None
    df.columns = [str(c).strip().lower() for c in df.columns]
    missing = [c for c in ("timestamp", "action") if c not in df.columns]
    if missing:
        found = ",".join(df.columns[:6]) or "<none>"
        raise UserInputError(f"{name}: missing column(s) {', '.join(missing)}; found {found}. "
                             "The header must be timestamp,action")
    actions = np.full(len(bars), int(Action.HOLD), dtype=np.int8)
    if len(df) == 0:
        return actions

    def line(pos: int) -> str:
        return f"{name}: line {pos + 2}"

    codes = df["action"].astype(str).str.strip().str.upper().map({a: int(Action[a]) for a in names_valid})
    bad = np.flatnonzero(codes.isna().to_numpy())
    if len(bad):
        pos = int(bad[0])
        raise UserInputError(f"{line(pos)}: unknown action {df['action'].iloc[pos]!r}; "
                             f"valid actions: {', '.join(names_valid)}")

    text = df["timestamp"].astype(str).str.strip()
    parsed = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if len(bad):
        pos = int(bad[0])
        raise UserInputError(f"{line(pos)}: cannot parse timestamp {text.iloc[pos][:40]!r}; "
                             "use ISO 8601 with an offset, e.g. 2021-01-01T09:15:00+05:30")
    has_offset = text.str.contains(r"(?:[+-]\d{2}:?\d{2}|Z)$", regex=True).to_numpy()
    if not has_offset.all():
        pos = int(np.flatnonzero(~has_offset)[0])
        raise UserInputError(f"{line(pos)}: timestamp {text.iloc[pos][:40]!r} has no time zone; "
                             "add the offset (e.g. +05:30 for IST)")
    stamps = pd.DatetimeIndex(parsed).tz_convert(bars.index.tz).as_unit(bars.index.unit)
    dup = np.flatnonzero(stamps.duplicated())
    if len(dup):
        pos = int(dup[0])
        raise UserInputError(f"{line(pos)}: timestamp {text.iloc[pos]} appears twice; give one action per bar")
    where = bars.index.get_indexer(stamps)
    bad = np.flatnonzero(where < 0)
    if len(bad):
        pos = int(bad[0])
        raise UserInputError(f"{line(pos)}: timestamp {text.iloc[pos]} is not a bar of the data "
                             f"({bars.index[0].isoformat()} … {bars.index[-1].isoformat()}); "
                             "use the bars' own (start) timestamps")
    actions[where] = codes.to_numpy(dtype=np.int64).astype(np.int8)
    return actions


def backtest_actions_file(path: Path, bars: Bars, window: BacktestWindow, config: EngineConfig) -> BacktestResult:
    """The actions of ``path`` backtested over ``window`` of ``bars`` (the file's timestamps may name any
    bar of ``bars``; only the traded bars' actions fill)."""
    return window.run(window.traded(read_actions_csv(path, bars)), config)
