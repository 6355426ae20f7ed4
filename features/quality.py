"""Data-quality report of a bar file, before anything trusts it.

``check_quality(raw, source)`` takes the structural parse of ``tradebot.features.bars.read_bar_file`` (file
order, nothing dropped) and counts what strict validation would reject or what deserves a look:

* erroneous rows: duplicate timestamps (every copy but the last), NaN/infinite cells, inconsistent
  OHLC (high < max(open, close), low > min(open, close), high < low), non-positive prices,
  negative volume, and, for NSE-session symbols, bars outside 09:15–15:30 IST and intraday bars
  off the session grid (e.g. 09:17 in a 5-minute file);
* out-of-order rows (a timestamp earlier than the row before it);
* missing bars: per session present in the file, the grid slots (09:15 + k·bar) without a bar.
  Whole weekdays without any bar are listed apart as "absent weekdays (holidays or gaps)": there is
  no holiday calendar to tell them apart;
* suspicious jumps: a close-to-close log return within a session above ``jump_k`` times a rolling
  robust scale (1.4826 × the rolling median of |return|), and gaps between sessions (first open
  against the previous session's last close) above ``gap_threshold`` in |log return|;
* volume: zero volume is normal for index symbols (``*-INDEX``) and reported as information only.

The share of missing or erroneous bars is compared with ``target`` (default 0.1 %). Everything that
fails goes to ``QualityReport.problems``; information goes to ``QualityReport.notes``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from tradebot.features.bars import BAR_COLUMNS, PRICE_COLUMNS, symbol_from_filename
from tradebot.features.resample import SESSION_EXCHANGES

from tradebot.core.errors import UserInputError
from tradebot.core.nse_time import (
    IST,
    SESSION_CLOSE_MINUTE,
    SESSION_OPEN_MINUTE,
    bars_per_session,
    detect_timeframe,
    is_intraday,
    minute_of_day,
    session_day,
    timeframe_minutes,
)

DEFAULT_JUMP_K = 20.0
DEFAULT_JUMP_WINDOW = 50
DEFAULT_GAP_THRESHOLD = 0.15
DEFAULT_TARGET = 0.001
SESSION_RULES = ("auto", "nse", "none")
_MAD_TO_SIGMA = 1.4826
_EXAMPLES = 5


@dataclass(frozen=True)
class Issue:
    """One finding: a stable ``code``, how many bars/cells it concerns, a readable line, examples."""

    code: str
    count: int
    message: str
    examples: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "count": self.count, "message": self.message, "examples": list(self.examples)}


@dataclass(frozen=True)
class QualityReport:
    """The quality of one bar file. ``ok`` when ``problems`` is empty."""

    source: str
    symbol: str | None
    rows: int
    first: pd.Timestamp
    last: pd.Timestamp
    timeframe: str
    session_rules: str  # "nse": NSE session checks applied; "none": not (24x7 or other exchanges)
    duplicates: int
    out_of_order: int
    nan_cells: dict[str, int]
    ohlc_inconsistent: dict[str, int]
    inconsistent_rows: int
    nonpositive_prices: int
    zero_volume: int
    negative_volume: int
    sessions: int
    expected_bars: int
    missing_bars: int | None
    short_sessions: tuple[dict[str, Any], ...]
    absent_weekdays: tuple[str, ...]
    outside_session: int
    off_grid: int
    weekend_bars: int
    jumps: tuple[dict[str, Any], ...]
    session_gaps: tuple[dict[str, Any], ...]
    erroneous_bars: int
    bad_share: float
    target: float
    settings: dict[str, Any]
    gaps: tuple[dict[str, Any], ...] = ()  # session rules "none": holes in a continuous intraday grid
    problems: list[Issue] = field(default_factory=list)
    notes: list[Issue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def nan_total(self) -> int:
        return int(sum(self.nan_cells.values()))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (timestamps as ISO 8601 strings)."""
        return {
            "source": self.source,
            "status": "ok" if self.ok else "problems",
            "symbol": self.symbol,
            "rows": self.rows,
            "first": self.first.isoformat(),
            "last": self.last.isoformat(),
            "timeframe": self.timeframe,
            "session_rules": self.session_rules,
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "nan_cells": dict(self.nan_cells),
            "ohlc_inconsistent": dict(self.ohlc_inconsistent),
            "inconsistent_rows": self.inconsistent_rows,
            "nonpositive_prices": self.nonpositive_prices,
            "zero_volume": self.zero_volume,
            "negative_volume": self.negative_volume,
            "sessions": self.sessions,
            "expected_bars": self.expected_bars,
            "missing_bars": self.missing_bars,
            "short_sessions": [dict(s) for s in self.short_sessions],
            "absent_weekdays": list(self.absent_weekdays),
            "outside_session": self.outside_session,
            "off_grid": self.off_grid,
            "weekend_bars": self.weekend_bars,
            "jumps": [dict(j) for j in self.jumps],
            "session_gaps": [dict(g) for g in self.session_gaps],
            "erroneous_bars": self.erroneous_bars,
            "bad_share": self.bad_share,
            "target": self.target,
            "settings": dict(self.settings),
            "gaps": [dict(g) for g in self.gaps],
            "problems": [p.to_dict() for p in self.problems],
            "notes": [n.to_dict() for n in self.notes],
        }


def check_quality(
    raw: pd.DataFrame,
    source: str,
    *,
    symbol: str | None = None,
    jump_k: float = DEFAULT_JUMP_K,
    jump_window: int = DEFAULT_JUMP_WINDOW,
    gap_threshold: float = DEFAULT_GAP_THRESHOLD,
    target: float = DEFAULT_TARGET,
    session: str = "auto",
) -> QualityReport:
    """Report the quality of ``raw`` (as from ``read_bar_file``: a ``timestamp`` column, file order).

    ``symbol`` defaults to the one in the file name (``NSE_SBIN-EQ_1d.csv.gz`` -> ``NSE:SBIN-EQ``).
    ``session``: ``"nse"`` applies the NSE session 09:15–15:30 IST (missing bars, bars outside the
    session), ``"none"`` skips those checks (24x7 crypto, FX), ``"auto"`` picks ``"nse"`` unless the
    symbol's exchange trades other hours (not NSE/BSE/NFO/BFO).
    """
    if jump_k <= 0 or jump_window < 3 or gap_threshold <= 0 or not 0 <= target < 1:
        raise UserInputError("quality settings: need jump_k > 0, jump_window >= 3, gap_threshold > 0 and 0 <= target < 1")
    if session not in SESSION_RULES:
        raise UserInputError(f"session rules {session!r}: use one of {', '.join(SESSION_RULES)}")
    ts = _timestamps(raw, source)
    missing_cols = [c for c in BAR_COLUMNS if c not in raw.columns]
    if missing_cols:
        raise UserInputError(f"{source}: missing column(s) {', '.join(missing_cols)}")
    if len(ts) == 0:
        raise UserInputError(f"{source}: no rows of bars")
    symbol = symbol or symbol_from_filename(source)
    exchange = symbol.split(":", 1)[0] if symbol else None
    rules = session if session != "auto" else ("nse" if exchange is None or exchange in SESSION_EXCHANGES else "none")
    is_index = bool(symbol and symbol.upper().endswith("-INDEX"))

    n = len(ts)
    values = {c: pd.to_numeric(raw[c], errors="coerce").to_numpy(dtype="float64") for c in BAR_COLUMNS}
    o, h, lo, c, v = (values[k] for k in BAR_COLUMNS)
    ns = ts.as_unit("ns").asi8

    # ---- row-level errors (file order)
    finite = {k: np.isfinite(values[k]) for k in BAR_COLUMNS}
    nan_cells = {k: int((~finite[k]).sum()) for k in BAR_COLUMNS}
    nan_row = ~np.logical_and.reduce([finite[k] for k in BAR_COLUMNS])
    prices = np.column_stack([values[k] for k in PRICE_COLUMNS])
    with np.errstate(invalid="ignore"):
        nonpos_row = (prices <= 0).any(axis=1)
        high_low_oc = h < np.maximum(o, c)
        low_high_oc = lo > np.minimum(o, c)
        high_lt_low = h < lo
        neg_vol = v < 0
        zero_vol = v == 0
    incons_row = high_low_oc | low_high_oc | high_lt_low
    order = np.argsort(ns, kind="stable")
    sorted_ns = ns[order]
    dup_sorted = np.r_[sorted_ns[1:] == sorted_ns[:-1], False]  # every copy but the last in file order
    dup_row = np.zeros(n, dtype=bool)
    dup_row[order] = dup_sorted
    out_of_order = int((np.diff(ns) < 0).sum())

    uniq_idx = pd.DatetimeIndex(np.unique(sorted_ns).astype("datetime64[ns]"), tz="UTC").tz_convert(IST)
    timeframe = detect_timeframe(uniq_idx)
    intraday = is_intraday(timeframe)
    local = ts.tz_convert(IST)
    weekday = local.dayofweek.to_numpy()
    weekend_bars = int((weekday >= 5).sum())
    day = session_day(local)

    # ---- session grid (NSE intraday)
    outside = np.zeros(n, dtype=bool)
    off_grid = np.zeros(n, dtype=bool)
    short: list[dict[str, Any]] = []
    missing: int | None = None
    expected = 0
    step = timeframe_minutes(timeframe) if intraday else 0
    if rules == "nse" and intraday:
        minute = minute_of_day(local)
        outside = (minute < SESSION_OPEN_MINUTE) | (minute >= SESSION_CLOSE_MINUTE)
        into = minute - SESSION_OPEN_MINUTE
        seconds = local.second.to_numpy() != 0
        off_grid = ~outside & ((into % step != 0) | seconds)
        on_grid = ~outside & ~off_grid
        per_session = bars_per_session(timeframe)
        slots = np.unique(day[on_grid] * per_session + into[on_grid] // step)
        session_days = np.unique(day[~outside])
        slot_days, present = np.unique(slots // per_session, return_counts=True)
        present_by_day = dict(zip(slot_days.tolist(), present.tolist()))
        expected = len(session_days) * per_session
        missing = expected - len(slots)
        for d in session_days.tolist():
            got = present_by_day.get(d, 0)
            if got < per_session:
                short.append({"date": _date(d), "present": got, "missing": per_session - got})
        present_days = session_days
    else:
        present_days = np.unique(day)
        expected = len(np.unique(sorted_ns))
        if rules == "nse":
            missing = 0  # one bar per session: a present day has its bar
    absent = _absent_weekdays(present_days) if rules == "nse" else []
    grid_gaps: list[dict[str, Any]] = []
    if rules == "none" and intraday and len(uniq_idx) > 1:
        step_ns = step * 60 * 10**9
        d = np.diff(uniq_idx.as_unit("ns").asi8)
        for j in np.flatnonzero(d > step_ns):
            grid_gaps.append({"from": uniq_idx[j].isoformat(), "to": uniq_idx[j + 1].isoformat(),
                              "bars": int(d[j] // step_ns) - 1})

    erroneous_row = nan_row | nonpos_row | incons_row | neg_vol | dup_row | outside | off_grid
    erroneous = int(erroneous_row.sum())
    extra = int((dup_row | outside | off_grid).sum())
    denominator = max(expected + extra, 1)
    bad = erroneous + (missing or 0)
    bad_share = bad / denominator

    # ---- jumps and session gaps, on the sorted, unique, valid bars
    good = ~(nan_row | nonpos_row | dup_row | outside | off_grid)
    g = order[good[order]]
    if rules == "none" and intraday:  # no sessions: returns across a hole in the grid are not bar returns
        gns = ns[g]
        segment = np.r_[0, np.cumsum(np.diff(gns) > step * 60 * 10**9)]
        jumps, gaps = _jumps(local[g], o[g], c[g], segment, True, jump_k, jump_window, gap_threshold, False)
    else:
        jumps, gaps = _jumps(local[g], o[g], c[g], day[g], intraday and rules == "nse", jump_k, jump_window,
                             gap_threshold, rules == "nse")

    settings = {"jump_k": jump_k, "jump_window": jump_window, "gap_threshold": gap_threshold, "session": rules}
    report = QualityReport(
        source=source, symbol=symbol, rows=n,
        first=pd.Timestamp(uniq_idx[0]), last=pd.Timestamp(uniq_idx[-1]), timeframe=timeframe,
        session_rules=rules, duplicates=int(dup_row.sum()), out_of_order=out_of_order,
        nan_cells=nan_cells,
        ohlc_inconsistent={"high_below_open_close": int(high_low_oc.sum()),
                           "low_above_open_close": int(low_high_oc.sum()),
                           "high_below_low": int(high_lt_low.sum())},
        inconsistent_rows=int(incons_row.sum()), nonpositive_prices=int(nonpos_row.sum()),
        zero_volume=int(zero_vol.sum()), negative_volume=int(neg_vol.sum()),
        sessions=len(present_days), expected_bars=expected, missing_bars=missing,
        short_sessions=tuple(short), absent_weekdays=tuple(absent),
        outside_session=int(outside.sum()), off_grid=int(off_grid.sum()), weekend_bars=weekend_bars,
        jumps=tuple(jumps), session_gaps=tuple(gaps), erroneous_bars=erroneous,
        bad_share=bad_share, target=target, settings=settings, gaps=tuple(grid_gaps),
    )
    _findings(report, local, masks={
        "duplicates": dup_row, "nan": nan_row, "nonpositive": nonpos_row, "ohlc": incons_row,
        "negative_volume": neg_vol, "outside_session": outside, "off_grid": off_grid,
        "out_of_order": np.r_[False, np.diff(ns) < 0], "zero_volume": zero_vol,
    }, is_index=is_index, step=step, denominator=denominator, bad=bad)
    return report


# --------------------------------------------------------------------------- helpers
def _timestamps(raw: pd.DataFrame, source: str) -> pd.DatetimeIndex:
    if "timestamp" in raw.columns:
        ts = raw["timestamp"]
        if not isinstance(ts.dtype, pd.DatetimeTZDtype):
            raise UserInputError(f"{source}: 'timestamp' must be tz-aware datetimes (read the file with read_bar_file)")
        return pd.DatetimeIndex(ts)
    if isinstance(raw.index, pd.DatetimeIndex) and raw.index.tz is not None:
        return raw.index
    raise UserInputError(f"{source}: needs a tz-aware 'timestamp' column or index")


def _date(day: int) -> str:
    return str(np.datetime64(int(day), "D"))


def _absent_weekdays(present_days: np.ndarray) -> list[str]:
    if len(present_days) == 0:
        return []
    all_days = np.arange(present_days.min(), present_days.max() + 1)
    weekdays = all_days[((all_days + 3) % 7) < 5]  # 1970-01-01 was a Thursday (weekday 3)
    return [_date(d) for d in np.setdiff1d(weekdays, present_days)]


def _robust_scale(r: np.ndarray, window: int) -> np.ndarray:
    absr = np.abs(r)
    overall = _MAD_TO_SIGMA * float(np.median(absr))
    if overall == 0.0:
        nonzero = absr[absr > 0]
        overall = _MAD_TO_SIGMA * float(np.median(nonzero)) if len(nonzero) else 0.0
    rolling = pd.Series(absr).rolling(window, center=True, min_periods=min(window, 10)).median().to_numpy()
    rolling = _MAD_TO_SIGMA * np.nan_to_num(rolling, nan=overall / _MAD_TO_SIGMA)
    return np.maximum(rolling, 0.25 * overall)


def _jumps(idx: pd.DatetimeIndex, o: np.ndarray, c: np.ndarray, day: np.ndarray, by_session: bool,
           k: float, window: int, gap_threshold: float, session_gaps: bool):
    jumps: list[dict[str, Any]] = []
    gaps: list[dict[str, Any]] = []
    if len(c) < 2:
        return jumps, gaps
    r = np.diff(np.log(c))
    same = np.diff(day) == 0
    use = same if by_session else np.ones(len(r), dtype=bool)
    pos = np.flatnonzero(use)  # r[pos] is the return into bar pos + 1
    if len(pos) >= 3:
        rr = r[pos]
        scale = _robust_scale(rr, window)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(scale > 0, np.abs(rr) / scale, np.where(rr != 0, np.inf, 0.0))
        for j in np.flatnonzero(ratio > k):
            at = pos[j] + 1
            jumps.append({"timestamp": idx[at].isoformat(), "previous": idx[at - 1].isoformat(),
                          "log_return": round(float(rr[j]), 6), "scale": round(float(scale[j]), 8),
                          "ratio": round(float(ratio[j]), 1) if math.isfinite(ratio[j]) else None})
    if session_gaps:
        new_session = np.flatnonzero(~same) + 1  # first bar of each later session
        gap = np.log(o[new_session] / c[new_session - 1])
        for j in np.flatnonzero(np.abs(gap) > gap_threshold):
            at = new_session[j]
            gaps.append({"timestamp": idx[at].isoformat(), "previous": idx[at - 1].isoformat(),
                         "log_return": round(float(gap[j]), 6)})
    return jumps, gaps


def _fmt(n: int) -> str:
    return f"{n:,}"


def _findings(report: QualityReport, local: pd.DatetimeIndex, masks: dict[str, np.ndarray],
              is_index: bool, step: int, denominator: int, bad: int) -> None:
    csv_like = not report.source.lower().endswith((".parquet", ".pq"))

    def examples(mask: np.ndarray) -> tuple[str, ...]:
        where = np.flatnonzero(mask)[:_EXAMPLES]
        place = (lambda p: f"line {p + 2}") if csv_like else (lambda p: f"row {p + 1}")
        return tuple(f"{place(int(p))} ({local[p].isoformat()})" for p in where)

    def problem(code: str, count: int, message: str, ex: tuple[str, ...] = ()) -> None:
        report.problems.append(Issue(code, count, message, ex))

    def note(code: str, count: int, message: str, ex: tuple[str, ...] = ()) -> None:
        report.notes.append(Issue(code, count, message, ex))

    if report.duplicates:
        problem("duplicates", report.duplicates, f"{_fmt(report.duplicates)} duplicate timestamp(s)",
                examples(masks["duplicates"]))
    if report.out_of_order:
        problem("out_of_order", report.out_of_order,
                f"{_fmt(report.out_of_order)} row(s) earlier than the row before them (file not sorted)",
                examples(masks["out_of_order"]))
    if report.nan_total:
        cols = ", ".join(f"{k} {v:,}" for k, v in report.nan_cells.items() if v)
        problem("nan", report.nan_total, f"{_fmt(report.nan_total)} NaN/infinite cell(s) ({cols})",
                examples(masks["nan"]))
    if report.inconsistent_rows:
        parts = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in report.ohlc_inconsistent.items() if v)
        problem("ohlc", report.inconsistent_rows, f"{_fmt(report.inconsistent_rows)} bar(s) with inconsistent OHLC ({parts})",
                examples(masks["ohlc"]))
    if report.nonpositive_prices:
        problem("nonpositive", report.nonpositive_prices, f"{_fmt(report.nonpositive_prices)} bar(s) with a price <= 0",
                examples(masks["nonpositive"]))
    if report.negative_volume:
        problem("negative_volume", report.negative_volume, f"{_fmt(report.negative_volume)} bar(s) with negative volume",
                examples(masks["negative_volume"]))
    if report.zero_volume:
        all_zero = report.zero_volume == report.rows
        if is_index or (report.symbol is None and all_zero):
            why = "normal for an index" if is_index else "no volume data: an index?"
            note("zero_volume", report.zero_volume, f"{_fmt(report.zero_volume)} bar(s) with volume 0 ({why})")
        else:
            problem("zero_volume", report.zero_volume, f"{_fmt(report.zero_volume)} bar(s) with volume 0",
                    examples(masks["zero_volume"]))
    if report.outside_session:
        problem("outside_session", report.outside_session,
                f"{_fmt(report.outside_session)} bar(s) outside the session 09:15–15:30 IST",
                examples(masks["outside_session"]))
    if report.off_grid:
        problem("off_grid", report.off_grid,
                f"{_fmt(report.off_grid)} bar(s) off the {report.timeframe} grid anchored at 09:15",
                examples(masks["off_grid"]))
    if report.session_rules == "nse" and is_intraday(report.timeframe):
        minutes = minute_of_day(local)
        if report.outside_session and not (minutes == SESSION_OPEN_MINUTE).any() \
                and (minutes == SESSION_CLOSE_MINUTE).any():
            note("end_labelled", 0, "no bar at 09:15 but bars at 15:30: labels look like bar ends; "
                                    "shift them back by one bar (bars are labelled by their start)")
    if report.missing_bars:
        worst = sorted(report.short_sessions, key=lambda s: -s["missing"])[:_EXAMPLES]
        ex = tuple(f"{s['date']}: {s['missing']} missing" for s in worst)
        note("missing_bars", report.missing_bars,
             f"{_fmt(report.missing_bars)} bar(s) missing in {len(report.short_sessions)} short session(s) "
             f"of {report.sessions}", ex)
    if report.absent_weekdays:
        note("absent_weekdays", len(report.absent_weekdays),
             f"{len(report.absent_weekdays)} absent weekday(s) (holidays or gaps)", report.absent_weekdays[:_EXAMPLES])
    if report.weekend_bars and report.session_rules == "nse":
        note("weekend_bars", report.weekend_bars, f"{_fmt(report.weekend_bars)} bar(s) on a Saturday or Sunday "
                                                  "(special sessions such as Muhurat trading?)")
    if report.gaps:
        holes = sum(g["bars"] for g in report.gaps)
        big = sorted(report.gaps, key=lambda g: -g["bars"])[:_EXAMPLES]
        note("gaps", holes, f"{len(report.gaps):,} gap(s) in the continuous {report.timeframe} grid, {holes:,} bar(s) "
                            "(weekends or outages; no session rules applied)",
             tuple(f"{g['from']} -> {g['to']} ({g['bars']} bars)" for g in big))
    if report.jumps:
        big = sorted(report.jumps, key=lambda j: -abs(j["log_return"]))[:_EXAMPLES]
        problem("jumps", len(report.jumps),
                f"{len(report.jumps)} suspicious jump(s): |log return| > {report.settings['jump_k']:g} x rolling robust scale",
                tuple(f"{j['timestamp']} ({j['log_return']:+.2%})" for j in big))
    if report.session_gaps:
        big = sorted(report.session_gaps, key=lambda j: -abs(j["log_return"]))[:_EXAMPLES]
        problem("session_gaps", len(report.session_gaps),
                f"{len(report.session_gaps)} gap(s) between sessions above {report.settings['gap_threshold']:.0%}",
                tuple(f"{j['timestamp']} ({j['log_return']:+.2%})" for j in big))
    share = f"{report.bad_share:.3%} of {denominator:,} bars missing or erroneous (target < {report.target:.2%})"
    if report.bad_share > report.target:
        problem("bad_share", bad, share)
    elif bad:
        note("bad_share", bad, share)


# --------------------------------------------------------------------------- repair
@dataclass(frozen=True)
class RepairReport:
    """What ``repair_bars`` changed, each as a count of rows (or cells for the clamps)."""

    nan_rows_dropped: int
    nonpositive_rows_dropped: int
    negative_volume_rows_dropped: int
    out_of_order_rows: int
    duplicates_dropped: int
    high_clamped: int
    low_clamped: int
    rows_in: int
    rows_out: int

    @property
    def changed(self) -> bool:
        return self.rows_in != self.rows_out or bool(self.out_of_order_rows or self.high_clamped or self.low_clamped)

    def lines(self) -> list[str]:
        """One readable line per repair (all of them, zeros included, so nothing is silent)."""
        return [
            f"sorted by timestamp: {self.out_of_order_rows:,} row(s) were out of order",
            f"dropped {self.duplicates_dropped:,} duplicate timestamp(s) (kept the last row of each)",
            f"dropped {self.nan_rows_dropped:,} row(s) with NaN or infinite values",
            f"dropped {self.nonpositive_rows_dropped:,} row(s) with a price <= 0",
            f"dropped {self.negative_volume_rows_dropped:,} row(s) with negative volume",
            f"clamped high up to max(open, close) on {self.high_clamped:,} bar(s)",
            f"clamped low down to min(open, close) on {self.low_clamped:,} bar(s)",
        ]

    def to_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def repair_bars(raw: pd.DataFrame, source: str = "bars") -> tuple[pd.DataFrame, RepairReport]:
    """Make a raw frame (``read_bar_file``'s) pass strict validation, counting every change.

    Drops rows with NaN/infinite values, non-positive prices or negative volume; sorts by timestamp;
    drops duplicate timestamps keeping the last row of each in file order; raises high to
    max(open, close) and lowers low to min(open, close) where they do not cover them. Raises
    ``UserInputError`` when no row is left.
    """
    ts = _timestamps(raw, source)
    frame = pd.DataFrame({"timestamp": ts})
    for col in BAR_COLUMNS:
        frame[col] = pd.to_numeric(pd.Series(raw[col].to_numpy()), errors="coerce").astype("float64").to_numpy()
    rows_in = len(frame)
    values = frame[list(BAR_COLUMNS)].to_numpy()
    nan_row = ~np.isfinite(values).all(axis=1)
    with np.errstate(invalid="ignore"):
        nonpos_row = ~nan_row & (frame[list(PRICE_COLUMNS)].to_numpy() <= 0).any(axis=1)
        negvol_row = ~nan_row & ~nonpos_row & (frame["volume"].to_numpy() < 0)
    frame = frame[~(nan_row | nonpos_row | negvol_row)]
    ns = pd.DatetimeIndex(frame["timestamp"]).as_unit("ns").asi8
    out_of_order = int((np.diff(ns) < 0).sum())
    frame = frame.iloc[np.argsort(ns, kind="stable")]
    dup = frame["timestamp"].duplicated(keep="last").to_numpy()
    frame = frame[~dup].reset_index(drop=True)
    if len(frame) == 0:
        raise UserInputError(f"{source}: no valid rows left after --repair (every row had NaN, a price <= 0 "
                             "or negative volume); fix the source file")
    oc_max = np.maximum(frame["open"].to_numpy(), frame["close"].to_numpy())
    oc_min = np.minimum(frame["open"].to_numpy(), frame["close"].to_numpy())
    high_fix = frame["high"].to_numpy() < oc_max
    low_fix = frame["low"].to_numpy() > oc_min
    frame["high"] = np.where(high_fix, oc_max, frame["high"].to_numpy())
    frame["low"] = np.where(low_fix, oc_min, frame["low"].to_numpy())
    report = RepairReport(
        nan_rows_dropped=int(nan_row.sum()), nonpositive_rows_dropped=int(nonpos_row.sum()),
        negative_volume_rows_dropped=int(negvol_row.sum()), out_of_order_rows=out_of_order,
        duplicates_dropped=int(dup.sum()), high_clamped=int(high_fix.sum()), low_clamped=int(low_fix.sum()),
        rows_in=rows_in, rows_out=len(frame),
    )
    return frame, report
