"""``tradebot data``: check bar files, import them into the Parquet store, list the store.

Exit codes: 0 success / clean; 1 ``data check`` found quality problems; 2 a file cannot be read as
bars or the input is wrong (one ``error:`` line on stderr naming the file, line/row and the fix).
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tradebot.features.bars import read_bar_file, validate_symbol
from tradebot.features.quality import (
    DEFAULT_GAP_THRESHOLD,
    DEFAULT_JUMP_K,
    DEFAULT_JUMP_WINDOW,
    DEFAULT_TARGET,
    SESSION_RULES,
    QualityReport,
    check_quality,
)
from tradebot.core.nse_time import is_intraday
from tradebot.features.store import STORE_ENV, Store
from tradebot.core.errors import UserInputError

EXIT_OK, EXIT_PROBLEMS, EXIT_UNREADABLE = 0, 1, 2

_STORE_HELP = f"Store directory (default: ${STORE_ENV}, else ./store)."


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False)


@click.group("data", context_settings={"help_option_names": ["-h", "--help"]})
def data() -> None:
    """Check bar files, import them into the Parquet store, and list what is stored.

    \b
    Bar files: CSV, CSV.gz or Parquet with timestamp,open,high,low,close,volume and
    ISO 8601 timestamps with an offset (2021-01-01T09:15:00+05:30), bars labelled by start.
    """


# --------------------------------------------------------------------------- check
@data.command("check")
@click.argument("paths", nargs=-1, required=True, type=click.Path(dir_okay=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of tables.")
@click.option("--jump-k", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_JUMP_K, show_default=True,
              help="Flag a close-to-close |log return| above K x the rolling robust scale (1.4826 x rolling "
                   "median |return|) within a session.")
@click.option("--jump-window", type=click.IntRange(min=3), default=DEFAULT_JUMP_WINDOW, show_default=True,
              help="Bars in the centred rolling window of the robust scale.")
@click.option("--gap-threshold", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_GAP_THRESHOLD,
              show_default=True, help="Flag a gap between sessions (open vs previous close) above this |log return|.")
@click.option("--target", type=click.FloatRange(min=0, max=1, max_open=True), default=DEFAULT_TARGET,
              show_default=True, help="Largest acceptable share of missing or erroneous bars (0.001 = 0.1%).")
@click.option("--session", type=click.Choice(SESSION_RULES), default="auto", show_default=True,
              help="Session rules: nse = 09:15-15:30 IST checks (missing bars, bars outside the session); "
                   "none = skip them (crypto, FX); auto = nse unless the file name's exchange trades other hours.")
def check(paths: tuple[Path, ...], as_json: bool, jump_k: float, jump_window: int, gap_threshold: float,
          target: float, session: str) -> None:
    """Report the data quality of each bar file PATH.

    \b
    Counts rows, first/last bar, the detected bar size, duplicate timestamps, out-of-order rows,
    NaN cells, inconsistent OHLC, prices <= 0, zero/negative volume (zero is normal for
    *-INDEX symbols), bars outside the NSE session 09:15-15:30 IST, missing bars per session
    (days in the file; whole absent weekdays are listed apart as holidays or gaps), suspicious
    jumps and gaps between sessions, and the share of missing or erroneous bars vs --target.

    \b
    Exit codes (several files: the worst one):
      0  every file is clean
      1  quality problems were found
      2  a file cannot be read as bars (its one-line error is printed; the others are checked)

    \b
    Example:
      tradebot data check data/sample/NSE_NIFTY50-INDEX_5m.csv.gz --jump-k 15
    """
    worst = EXIT_OK
    results: list[dict] = []
    console = _console()
    for path in paths:
        try:
            raw = read_bar_file(path)
            report = check_quality(raw, str(path), jump_k=jump_k, jump_window=jump_window,
                                   gap_threshold=gap_threshold, target=target, session=session)
        except UserInputError as err:
            click.echo(f"error: {err}", err=True)
            results.append({"source": str(path), "status": "unreadable", "error": str(err),
                            "exit_code": EXIT_UNREADABLE})
            worst = max(worst, EXIT_UNREADABLE)
            continue
        code = EXIT_OK if report.ok else EXIT_PROBLEMS
        worst = max(worst, code)
        if as_json:
            results.append({**report.to_dict(), "exit_code": code})
        else:
            _print_report(console, report)
    if as_json:
        click.echo(json.dumps({"files": results, "exit_code": worst}, indent=2))
    click.get_current_context().exit(worst)


def _print_report(console: Console, r: QualityReport) -> None:
    codes = {p.code for p in r.problems}
    note_codes = {n.code for n in r.notes}

    def status(*keys: str) -> str:
        if codes.intersection(keys):
            return "[bold red]PROBLEM[/]"
        if note_codes.intersection(keys):
            return "[yellow]info[/]"
        return "[green]ok[/]"

    def examples(code: str, limit: int = 3) -> str:
        for issue in (*r.problems, *r.notes):
            if issue.code == code and issue.examples:
                shown = list(issue.examples[:limit])
                more = issue.count - len(shown) if code not in ("missing_bars", "gaps") else 0
                if code == "absent_weekdays":
                    more = len(r.absent_weekdays) - len(shown)
                tail = f"\n… {more:,} more" if more > 0 and code not in ("bad_share",) else ""
                return "\n" + "\n".join(escape(e) for e in shown) + tail
        return ""

    console.print(f"[bold]{escape(r.source)}[/]", soft_wrap=True)  # never folded: paths stay greppable
    table = Table(show_header=True, header_style="bold")
    table.add_column("check")
    table.add_column("result", overflow="fold")
    table.add_column("status", no_wrap=True)
    rules = "NSE session 09:15–15:30 IST" if r.session_rules == "nse" else "no session rules"
    table.add_row("symbol / bar size", escape(f"{r.symbol or '?'}, {r.timeframe} (detected), {rules}"), "")
    table.add_row("rows", f"{r.rows:,}", "")
    table.add_row("first → last", f"{r.first.isoformat()} → {r.last.isoformat()}", "")
    table.add_row("sessions (days)", f"{r.sessions:,}", "")
    table.add_row("duplicate timestamps", f"{r.duplicates:,}" + examples("duplicates"), status("duplicates"))
    table.add_row("out-of-order rows", f"{r.out_of_order:,}" + examples("out_of_order"), status("out_of_order"))
    nan_detail = ", ".join(f"{k} {v:,}" for k, v in r.nan_cells.items() if v)
    table.add_row("NaN cells", f"{r.nan_total:,}" + (f" ({nan_detail})" if nan_detail else "") + examples("nan"),
                  status("nan"))
    o = r.ohlc_inconsistent
    table.add_row("inconsistent OHLC",
                  f"{r.inconsistent_rows:,} (high<max(o,c) {o['high_below_open_close']:,}, "
                  f"low>min(o,c) {o['low_above_open_close']:,}, high<low {o['high_below_low']:,})"
                  + examples("ohlc"), status("ohlc"))
    table.add_row("prices <= 0", f"{r.nonpositive_prices:,}" + examples("nonpositive"), status("nonpositive"))
    table.add_row("zero volume", f"{r.zero_volume:,}" + examples("zero_volume"), status("zero_volume"))
    table.add_row("negative volume", f"{r.negative_volume:,}" + examples("negative_volume"), status("negative_volume"))
    if r.session_rules == "nse":
        if is_intraday(r.timeframe):
            table.add_row("outside the session", f"{r.outside_session:,}" + examples("outside_session"),
                          status("outside_session"))
            table.add_row(f"off the {r.timeframe} grid", f"{r.off_grid:,}" + examples("off_grid"), status("off_grid"))
        short = f" in {len(r.short_sessions):,} short session(s)" if r.short_sessions else ""
        table.add_row("missing bars", f"{r.missing_bars or 0:,} of {r.expected_bars:,} expected{short}"
                      + examples("missing_bars"),
                      status("missing_bars", "bad_share") if r.missing_bars else status("missing_bars"))
        table.add_row("absent weekdays\n(holidays or gaps)", f"{len(r.absent_weekdays):,}" + examples("absent_weekdays"),
                      status("absent_weekdays"))
        if r.weekend_bars:
            table.add_row("weekend bars", f"{r.weekend_bars:,}", status("weekend_bars"))
    elif r.gaps:
        table.add_row("grid gaps", f"{len(r.gaps):,} ({sum(g['bars'] for g in r.gaps):,} bars)" + examples("gaps"),
                      status("gaps"))
    table.add_row(f"suspicious jumps (k={r.settings['jump_k']:g})", f"{len(r.jumps):,}" + examples("jumps"),
                  status("jumps"))
    if r.session_rules == "nse":
        table.add_row(f"session gaps > {r.settings['gap_threshold']:.0%}", f"{len(r.session_gaps):,}"
                      + examples("session_gaps"), status("session_gaps"))
    table.add_row("missing or erroneous", f"{r.bad_share:.3%} (target < {r.target:.2%})", status("bad_share"))
    console.print(table)
    if r.ok:
        console.print("[green]clean[/]: no problems found\n")
    else:
        console.print(f"[bold red]{len(r.problems)} problem(s)[/]: "
                      + escape("; ".join(p.message for p in r.problems)) + "\n")


# --------------------------------------------------------------------------- import
@data.command("import")
@click.argument("path", type=click.Path(dir_okay=True, path_type=Path))
@click.option("--symbol", help="Fyers symbol, e.g. NSE:NIFTY50-INDEX (default: from a file name such as "
                               "NSE_NIFTY50-INDEX_5m.csv.gz).")
@click.option("--timeframe", help="Resample to this bar size before storing (1m -> 5m/15m/1h/1d, 5m -> 15m/1h/1d; "
                                  "NSE-session bins from 09:15). Default: keep the detected bar size.")
@click.option("--store", "store_dir", type=click.Path(file_okay=False, path_type=Path), help=_STORE_HELP)
@click.option("--repair", is_flag=True, help="Sort, drop duplicate timestamps (keep the last), drop rows with NaN, "
                                              "prices <= 0 or negative volume, and clamp high/low to cover "
                                              "open/close, reporting each count; without it bad rows are refused.")
def import_(path: Path, symbol: str | None, timeframe: str | None, store_dir: Path | None, repair: bool) -> None:
    """Validate the bar file PATH and merge it into the Parquet store.

    \b
    One file per symbol and bar size: <store>/NSE_NIFTY50-INDEX/5m.parquet (symbol, bar size
    and sources in its Parquet metadata). Importing again merges: new timestamps are added and
    where a timestamp is already stored the new file wins (the count of replaced bars is shown).
    The write is atomic: a failed import leaves the store as it was.

    \b
    Exit codes: 0 imported; 2 the file, symbol or bar size is wrong (one error line naming
    the file, line/row and the fix; the store is not touched).

    \b
    Example:
      tradebot data import data/sample/NSE_NIFTY50-INDEX_1m.csv.gz --symbol NSE:NIFTY50-INDEX --timeframe 5m
    """
    from tradebot.features.importing import import_bar_file

    result = import_bar_file(path, symbol=symbol, timeframe=timeframe, store_dir=store_dir, repair=repair)
    done = result.written
    for line in result.repairs:
        click.echo(f"repair: {line}")
    for line in result.warnings:  # printed only once the import succeeded: a failure is exactly one line
        click.echo(f"warning: {line}", err=True)
    how = f"resampled {result.source_timeframe} -> {done.timeframe}" if result.resampled else f"{done.timeframe} bars"
    click.echo(f"imported {path} as {result.symbol} ({how}): {done.written:,} bar(s) -> {done.path}")
    click.echo(f"  {done.added:,} new, {done.replaced:,} replaced (the new file wins on overlapping timestamps); "
               f"store file now holds {done.rows:,} bar(s)")


# --------------------------------------------------------------------------- fetch
@data.command("fetch")
@click.option("--broker", type=click.Choice(["fyers"]), default="fyers", show_default=True,
              help="where the history comes from")
@click.option("--symbol", required=True, help="Fyers symbol, e.g. NSE:SBIN-EQ")
@click.option("--timeframe", default="5m", show_default=True, help="bar size: 1m, 5m, 15m, 1h, 1d, ...")
@click.option("--start", required=True, help="first day (IST), YYYY-MM-DD")
@click.option("--end", required=True, help="last day (IST, included), YYYY-MM-DD")
@click.option("--store", "store_dir", type=click.Path(file_okay=False, path_type=Path), help=_STORE_HELP)
@click.option("--api-base", default=None, envvar="TRADEBOT_FYERS_API_BASE",
              help="a Fyers simulator, e.g. http://127.0.0.1:8765 (default: the token's, else real Fyers)")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="the token `tradebot fyers login` wrote (default: $TRADEBOT_FYERS_TOKEN_FILE or ~/.config/...)")
def fetch(broker: str, symbol: str, timeframe: str, start: str, end: str, store_dir: Path | None,
          api_base: str | None, token_file: Path | None) -> None:
    """Download history from the broker into the Parquet store (chunked, rate limited, resumable).

    \b
    Fyers allows 100 days per request for minute bars and 366 for daily; longer ranges are split.
    Days the store already has are skipped, and each chunk is stored as it arrives, so running
    the same command again after an interruption continues where it stopped.

    \b
    Example:
      tradebot data fetch --broker fyers --symbol NSE:SBIN-EQ --timeframe 5m --start 2024-01-01 --end 2024-06-30
    """
    from tradebot.live.adapters.fyers.data import fetch_into_store

    validate_symbol(symbol)
    with click.progressbar(length=1, label=f"fetching {symbol} {timeframe}", file=None) as bar:
        def progress(done: int, total: int) -> None:
            bar.length = total
            bar.update(done - bar.pos)
        done = fetch_into_store(symbol, timeframe, start, end, store_dir=store_dir, api_base=api_base,
                                token_file=token_file, progress=progress)
    report, bars = done.report, done.bars
    if bars is None:
        click.echo(f"no {timeframe} bars of {symbol} between {start} and {end} (market closed, or before the data "
                   "starts)")
    else:
        click.echo(f"fetched {symbol} {report.timeframe}: {report.bars:,} bar(s) in {report.requests} request(s) "
                   f"({report.skipped_chunks} chunk(s) already in the store) -> {done.path}; "
                   f"{len(bars):,} bar(s) from {bars.index[0]} to {bars.index[-1]}")


# --------------------------------------------------------------------------- list
@data.command("list")
@click.option("--store", "store_dir", type=click.Path(file_okay=False, path_type=Path), help=_STORE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_(store_dir: Path | None, as_json: bool) -> None:
    """List the stored series: symbol, bar size, rows, first and last bar.

    \b
    Example:
      tradebot data list --store ./store
    """
    store = Store(store_dir)
    entries = store.list()
    if as_json:
        click.echo(json.dumps([{"symbol": e.symbol, "timeframe": e.timeframe, "rows": e.rows,
                                "first": e.first.isoformat() if e.first is not None else None,
                                "last": e.last.isoformat() if e.last is not None else None,
                                "path": str(store.path(e.symbol, e.timeframe))} for e in entries], indent=2))
        return
    if not entries:
        click.echo(f"store {store.root} is empty (add bars with: tradebot data import FILE --symbol SYMBOL)")
        return
    console = _console()
    console.print(f"[bold]store {escape(str(store.root))}[/] (times IST)", soft_wrap=True)
    table = Table(header_style="bold")
    for name, justify in (("symbol", "left"), ("bar", "left"), ("rows", "right"), ("first", "left"), ("last", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for e in entries:
        table.add_row(escape(e.symbol), e.timeframe, f"{e.rows:,}",
                      _short(e.first), _short(e.last))
    console.print(table)


def _short(ts) -> str:
    return ts.strftime("%Y-%m-%d %H:%M") if ts is not None else "-"
