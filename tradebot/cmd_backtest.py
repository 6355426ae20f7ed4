"""``tradebot backtest``: run a baseline or an action file through the fill engine, or compare baselines.

Exit codes: 0 success; 2 bad input (one ``error:`` line on stderr naming the file, line or key and
the fix; nothing is written to --out then).

The engine, numba, pandas-ta and plotly are imported when a backtest runs, not when the CLI starts,
so ``tradebot --help`` stays fast.
"""

from __future__ import annotations

import difflib
import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import click
import numpy as np
import pandas as pd
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from tradebot.config import load_config
from tradebot.errors import UserInputError

if TYPE_CHECKING:
    from envs.backtest import BacktestResult
    from envs.engine import EngineConfig
    from envs.metrics import Metrics
    from features.bars import Bars

CONFIG_SECTION = "engine"


# --------------------------------------------------------------------------- inputs

def load_engine_config(path: Path | None) -> EngineConfig:
    """``EngineConfig`` from the YAML file's ``engine`` section (defaults without a file).

    Unknown keys inside ``engine`` are rejected by the config class; a top-level key that looks like
    a misspelt ``engine`` is rejected too (it would otherwise be silently ignored).
    """
    from envs.engine import EngineConfig

    if path is None:
        return EngineConfig()
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
    return load_config(EngineConfig, path, CONFIG_SECTION)


def read_actions_csv(path: Path, bars: Bars) -> np.ndarray:
    """Actions from a ``timestamp,action`` CSV, aligned to ``bars`` (bars without a row: HOLD).

    Action names are ``HOLD, BUY_LONG, SELL_SHORT, CLOSE_LONG, CLOSE_SHORT`` (case-insensitive).
    Timestamps are ISO 8601 with an offset and must be bar (start) timestamps of the data; rows may
    come in any order. Every problem is one ``UserInputError`` naming the CSV line.
    """
    from envs.engine import Action

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


# --------------------------------------------------------------------------- outputs

def _stdout() -> Console:
    console = Console(highlight=False, soft_wrap=False)
    if not console.is_terminal:  # files and pipes: wide enough that the comparison table does not wrap
        console = Console(highlight=False, soft_wrap=False, width=max(console.width, 160))
    return console


@contextmanager
def _spinner(text: str) -> Iterator[None]:
    """A transient spinner with elapsed time on stderr (drawn only on a terminal)."""
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as progress:
        progress.add_task(text, total=None)
        yield


def _equity_frame(result: BacktestResult) -> pd.DataFrame:
    from envs.metrics import drawdown_series

    equity = result.equity
    return pd.DataFrame({
        "equity": equity.to_numpy(),
        "cash": result.cash.to_numpy(),
        "position": result.positions.to_numpy(),
        "drawdown": drawdown_series(equity, result.config.initial_cash).to_numpy(),
    }, index=equity.index.rename("timestamp"))


def _csv_text(frame: pd.DataFrame, index: bool) -> str:
    """CSV with ISO 8601 timestamps (offset kept) and full float precision."""
    out = frame.copy()
    for col in out.columns:
        if isinstance(out[col].dtype, pd.DatetimeTZDtype):
            out[col] = [t.isoformat() if pd.notna(t) else "" for t in out[col]]
    if index and isinstance(out.index, pd.DatetimeIndex):
        out.index = pd.Index([t.isoformat() for t in out.index], name=out.index.name or "timestamp")
    return out.to_csv(index=index, float_format="%.10g")


def _json_text(data: Any) -> str:
    return json.dumps(data, indent=2, allow_nan=False, default=str, ensure_ascii=False) + "\n"


def _summary_table(title: str, metrics: Metrics) -> Table:
    from envs.metrics import METRIC_LABELS, M, format_metric

    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in M.KEY + (M.FINAL_EQUITY, M.INVALID_ACTIONS):
        table.add_row(METRIC_LABELS[key], format_metric(key, metrics[key]))
    return table


def _compare_table(rows: dict[str, Metrics], title: str) -> Table:
    from envs.metrics import METRIC_LABELS, M, format_metric

    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("strategy")
    for key in M.KEY:
        table.add_column(METRIC_LABELS[key], justify="right")
    for name, m in rows.items():
        table.add_row(name, *(format_metric(k, m[k]) for k in M.KEY))
    return table


def _run_info(data: Path, bars: Bars, strategy: str, config: EngineConfig, seed: int,
              params: dict[str, Any] | None = None, actions_file: Path | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "strategy": strategy,
        "data": str(data),
        "symbol": bars.symbol,
        "timeframe": bars.timeframe,
        "bars": len(bars),
        "start": bars.index[0].isoformat(),
        "end": bars.index[-1].isoformat(),
        "seed": seed,
    }
    if params is not None:
        info["params"] = params
    if actions_file is not None:
        info["actions_file"] = str(actions_file)
    info[CONFIG_SECTION] = config.model_dump(mode="json")
    return info


# --------------------------------------------------------------------------- command

class _BacktestCommand(click.Command):
    """Fills the strategy list into the help only when help is asked for (it imports the baselines)."""

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from envs.baselines import BASELINES

        lines = "\n".join(f"  {b.name:<14} {b.summary}" for b in BASELINES.values())
        self.help = (self.help or "").replace("{strategies}", lines)
        super().format_help_text(ctx, formatter)


_HELP = """Backtest a baseline strategy or an action file on bar data, after NSE costs and slippage.

Every decision is taken at a bar's close and filled by the engine at the next bar's open;
stops, take-profits and the intraday square-off are the engine's (see --config).

\b
Strategies (--strategy NAME):
{strategies}

\b
One run writes to --out DIR:
  metrics.json   metrics (Sharpe, Sortino, drawdowns, win rate, ...) and the run's settings
  equity.csv     equity, cash, position and drawdown per bar
  trades.csv     one row per trade (entry/exit time and price, side, qty, costs, P&L, exit reason)
  report.html    self-contained report: price with trades, equity, drawdown, monthly returns

--compare prints one table of every baseline after costs (and writes compare.csv and
compare.json with --out).

\b
Examples:
  tradebot backtest --data data/sample/NSE_NIFTY50-INDEX_5m.csv.gz --strategy sma_crossover --out out/sma
  tradebot backtest --data bars.csv.gz --actions my_actions.csv --out out/mine --config engine.yaml
  tradebot backtest --data data/sample/NSE_NIFTY50-INDEX_5m.csv.gz --compare --out out/compare

Metrics are annualised with 375-minute sessions and 252 sessions a year, risk-free rate 0.
Bad input (unknown strategy or action name, a timestamp that is not a bar, an unknown config key)
prints one error line and exits with code 2, writing nothing.
"""


@click.command("backtest", cls=_BacktestCommand, help=_HELP,
               short_help="Backtest a baseline or an action file; compare baselines.",
               context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--data", "data_path", required=True, type=click.Path(path_type=Path), metavar="DATA",
              help="Bar file: CSV, CSV.gz or Parquet with timestamp,open,high,low,close,volume.")
@click.option("--strategy", metavar="NAME", help="Run this baseline (listed above).")
@click.option("--actions", "actions_path", type=click.Path(path_type=Path), metavar="FILE.csv",
              help="Run these actions instead: a CSV timestamp,action with action names HOLD, BUY_LONG, "
                   "SELL_SHORT, CLOSE_LONG, CLOSE_SHORT (bars without a row hold).")
@click.option("--compare", is_flag=True, help="Run every baseline on the data and print one table.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Output folder (created). Required with --strategy/--actions; optional with --compare.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), metavar="FILE",
              help="YAML file whose 'engine:' section sets the engine (capital, product, costs, slippage, "
                   "sizing, stops, square-off); unknown keys are an error.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the random baseline.")
def backtest(data_path: Path, strategy: str | None, actions_path: Path | None, compare: bool,
             out_dir: Path | None, config_path: Path | None, seed: int) -> None:
    modes = [flag for flag, on in (("--strategy", strategy is not None), ("--actions", actions_path is not None),
                                   ("--compare", compare)) if on]
    if len(modes) != 1:
        given = f" (got {' and '.join(modes)})" if modes else ""
        raise UserInputError(f"give exactly one of --strategy NAME, --actions FILE.csv or --compare{given}")
    if not compare and out_dir is None:
        raise UserInputError(f"{modes[0]} needs --out DIR (where metrics.json, equity.csv, trades.csv and report.html go)")
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise UserInputError(f"{out_dir}: exists and is not a folder; choose another --out")

    from envs.backtest import run_backtest
    from envs.baselines import get_baseline
    from envs.metrics import metrics_from_result
    from envs.report import write_report, write_text_atomic
    from features.bars import load_bars

    baseline = get_baseline(strategy) if strategy is not None else None  # unknown name: exit 2 before any work
    config = load_engine_config(config_path)
    with _spinner(f"loading {data_path}"):
        bars = load_bars(data_path)
    if len(bars) < 2:
        raise UserInputError(f"{data_path}: only {len(bars)} bar(s); a backtest needs at least 2")

    if compare:
        _compare(data_path, bars, config, seed, out_dir)
        return

    if baseline is not None:
        with _spinner(f"{baseline.name}: computing signals"):
            config = baseline.engine_config(config)
            actions = baseline(bars, config, seed=seed)
        name, params, source = baseline.name, dict(baseline.params), None
    else:
        assert actions_path is not None
        actions = read_actions_csv(actions_path, bars)
        name, params, source = f"actions:{actions_path.name}", None, actions_path

    with _spinner(f"{name}: backtesting {len(bars):,} bars"):
        result = run_backtest(bars, actions, config)
        metrics = metrics_from_result(result, bars.timeframe)
    info = _run_info(data_path, bars, name, config, seed, params, source)
    title = f"{name} on {bars.symbol or data_path.name} ({bars.timeframe})"

    assert out_dir is not None
    with _spinner(f"writing {out_dir}"):
        out_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out_dir / "equity.csv", _csv_text(_equity_frame(result), index=True))
        write_text_atomic(out_dir / "trades.csv", _csv_text(result.trades, index=False))
        write_text_atomic(out_dir / "metrics.json", _json_text({**metrics.to_dict(), "run": info}))
        write_report(result, bars, metrics, out_dir / "report.html", title, config=info,
                     initial_capital=result.config.initial_cash)

    console = _stdout()
    console.print(_summary_table(title, metrics))
    for note in metrics.notes:
        console.print(f"note: {note}")
    console.print(f"wrote {out_dir}/metrics.json, equity.csv, trades.csv, report.html")


def _compare(data_path: Path, bars: Bars, config: EngineConfig, seed: int, out_dir: Path | None) -> None:
    from envs.backtest import run_backtest
    from envs.baselines import BASELINES
    from envs.metrics import M, metrics_from_result
    from envs.report import write_text_atomic

    rows: dict[str, Metrics] = {}
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("baselines", total=len(BASELINES))
        for name, baseline in BASELINES.items():
            progress.update(task, description=f"backtesting {name}")
            run_config = baseline.engine_config(config)
            actions = baseline(bars, run_config, seed=seed)
            rows[name] = metrics_from_result(run_backtest(bars, actions, run_config), bars.timeframe)
            progress.advance(task)

    title = f"Baselines on {bars.symbol or data_path.name} ({bars.timeframe}, {len(bars):,} bars), after costs"
    console = _stdout()
    console.print(_compare_table(rows, title))
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        table = pd.DataFrame([m.values for m in rows.values()], index=pd.Index(list(rows), name="strategy"))
        write_text_atomic(out_dir / "compare.csv", table.loc[:, list(M.ALL)].to_csv(float_format="%.10g"))
        payload = {
            "strategies": {name: {**m.to_dict(), "params": dict(BASELINES[name].params)} for name, m in rows.items()},
            "run": _run_info(data_path, bars, "compare", config, seed),
        }
        write_text_atomic(out_dir / "compare.json", _json_text(payload))
        console.print(f"wrote {out_dir}/compare.csv, compare.json")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(backtest())
