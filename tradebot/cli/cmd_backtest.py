"""``tradebot backtest``: run a baseline, an action file or a trained policy through the fill engine, or
compare the baselines (and the policy).

The work is done by ``tradebot.envs`` (``BacktestWindow``: the evaluated dates after a warm-up; the
baselines; ``backtest_actions_file``; the report files) and ``tradebot.rl.backtest_policy`` (policies);
this module parses the flags, calls them and prints.

Exit codes: 0 success; 2 bad input (one ``error:`` line on stderr naming the file, line or key and
the fix; nothing is written to --out then).

The engine, numba, pandas-ta and plotly are imported when a backtest runs, not when the CLI starts,
so ``tradebot --help`` stays fast.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import click
import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from tradebot.core.errors import UserInputError

if TYPE_CHECKING:
    from tradebot.envs.backtest import BacktestResult
    from tradebot.envs.engine_config import EngineConfig
    from tradebot.envs.performance import Metrics
    from tradebot.envs.window import BacktestWindow
    from tradebot.features.bars import Bars
    from tradebot.rl.backtest_policy import PolicyBacktest, PolicySetup


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


def _summary_table(title: str, metrics: Metrics) -> Table:
    from tradebot.envs.performance import METRIC_LABELS, M, format_metric

    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in M.KEY + (M.FINAL_EQUITY, M.INVALID_ACTIONS):
        table.add_row(METRIC_LABELS[key], format_metric(key, metrics[key]))
    return table


def _compare_table(rows: dict[str, Metrics], title: str) -> Table:
    from tradebot.envs.performance import METRIC_LABELS, M, format_metric

    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("strategy", no_wrap=True, min_width=max(map(len, rows), default=8))  # names whole, never cut
    for key in M.KEY:
        table.add_column(METRIC_LABELS[key], justify="right")
    for name, m in rows.items():
        table.add_row(name, *(format_metric(k, m[k]) for k in M.KEY))
    return table


# --------------------------------------------------------------------------- command

class _BacktestCommand(click.Command):
    """Fills the strategy list into the help only when help is asked for (it imports the baselines)."""

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from tradebot.envs.baselines import BASELINES

        lines = "\n".join(f"  {b.name:<14} {b.summary}" for b in BASELINES.values())
        self.help = (self.help or "").replace("{strategies}", lines)
        super().format_help_text(ctx, formatter)


_HELP = """Backtest a baseline strategy, an action file or a trained policy on bar data, after NSE costs and slippage.

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
  decisions.csv  (a mixture of experts only) per decision: action, the gate's weight per expert
                 (w_<expert>) and the chosen expert; report.html then charts them

--compare prints one table of every baseline after costs (and writes compare.csv and
compare.json with --out). --compare --policy MODEL adds the policy as a row, on the same dates
and engine, and with --out also writes the policy's own four files.

--policy MODEL is a checkpoint folder or an MLflow model URI (models:/NAME/VERSION,
models:/NAME@ALIAS, runs:/RUN_ID/policy; MLFLOW_TRACKING_URI, default sqlite:///mlflow.db). It
acts bar by bar on the observations of the env it was trained on: features and engine come from
its saved training config (--config may still override engine keys); a policy whose observation
size does not match is refused.

--start/--end (dates in IST, end excluded) limit the evaluated period: every strategy starts flat
with the initial capital at --start, and earlier bars only warm the indicators and features up.
Baselines that carry positions overnight (buy_and_hold) are computed on the period alone, so they
start flat too. With --policy and no --start, the period starts at the first session after the
features' warm-up.

\b
Examples:
  tradebot backtest --data data/sample/NSE_NIFTY50-INDEX_5m.csv.gz --strategy sma_crossover --out out/sma
  tradebot backtest --data bars.csv.gz --actions my_actions.csv --out out/mine --config engine.yaml
  tradebot backtest --data data/sample/NSE_NIFTY50-INDEX_5m.csv.gz --compare --out out/compare
  tradebot backtest --data data/sample/NSE_NIFTY50-INDEX_5m.csv.gz --policy models:/tradebot-ppo-lstm-demo/1 \\
      --compare --start 2021-06-01 --end 2021-07-01 --out out/june

Metrics are annualised with 375-minute sessions and 252 sessions a year, risk-free rate 0.
Bad input (unknown strategy or action name, a timestamp that is not a bar, an unknown config key,
a model that cannot be loaded) prints one error line and exits with code 2, writing nothing.
"""


def _parse_day(option: str, value: str | None) -> pd.Timestamp | None:
    if value is None:
        return None
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        ts = None
    if ts is None or pd.isna(ts):
        raise UserInputError(f"{option} {value!r}: not a date; use YYYY-MM-DD (IST), e.g. 2021-06-01")
    return ts


def _load_policy(source: str, config_path: Path | None) -> PolicySetup:
    import logging
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import tradebot.rl.policy  # noqa: F401  (imports Ray, which sets its loggers' levels)
    from tradebot.rl.backtest_policy import load_policy_setup

    for name in ("ray", "ray.rllib", "mlflow"):  # after the imports: Ray sets its loggers' levels on import
        logging.getLogger(name).setLevel(logging.ERROR)
    return load_policy_setup(source, config_path)


def _write_run(out_dir: Path, result: BacktestResult, bars: Bars, metrics: Metrics, info: dict[str, Any],
               title: str, decisions: pd.DataFrame | None = None) -> None:
    from tradebot.envs.backtest_report import write_run_files

    with _spinner(f"writing {out_dir}"):
        write_run_files(out_dir, result, bars, metrics, info, title, decisions)


@click.command("backtest", cls=_BacktestCommand, help=_HELP,
               short_help="Backtest a baseline, an action file or a trained policy; compare them.",
               context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--data", "data_path", required=True, type=click.Path(path_type=Path), metavar="DATA",
              help="Bar file: CSV, CSV.gz or Parquet with timestamp,open,high,low,close,volume.")
@click.option("--strategy", metavar="NAME", help="Run this baseline (listed above).")
@click.option("--actions", "actions_path", type=click.Path(path_type=Path), metavar="FILE.csv",
              help="Run these actions instead: a CSV timestamp,action with action names HOLD, BUY_LONG, "
                   "SELL_SHORT, CLOSE_LONG, CLOSE_SHORT (bars without a row hold).")
@click.option("--policy", "policy_source", metavar="MODEL",
              help="Run a trained policy: a checkpoint folder or an MLflow URI (models:/NAME/VERSION, "
                   "models:/NAME@ALIAS, runs:/RUN_ID/policy). With --compare: add it as a row.")
@click.option("--compare", is_flag=True, help="Run every baseline on the data and print one table.")
@click.option("--start", "start_text", metavar="DATE", help="First day evaluated (IST); earlier bars only warm up indicators.")
@click.option("--end", "end_text", metavar="DATE", help="First day not evaluated (IST); later bars are not read.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Output folder (created). Required with --strategy/--actions/--policy; optional with --compare.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), metavar="FILE",
              help="YAML file whose 'engine:' section sets the engine (capital, product, costs, slippage, "
                   "sizing, stops, square-off); unknown keys are an error. With --policy it overrides only "
                   "the keys it sets.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the random baseline.")
def backtest(data_path: Path, strategy: str | None, actions_path: Path | None, policy_source: str | None,
             compare: bool, start_text: str | None, end_text: str | None, out_dir: Path | None,
             config_path: Path | None, seed: int) -> None:
    modes = [flag for flag, on in (("--strategy", strategy is not None), ("--actions", actions_path is not None),
                                   ("--policy", policy_source is not None), ("--compare", compare)) if on]
    if len(modes) != 1 and modes != ["--policy", "--compare"]:
        given = f" (got {' and '.join(modes)})" if modes else ""
        raise UserInputError("give exactly one of --strategy NAME, --actions FILE.csv, --policy MODEL or --compare "
                             f"(--compare may add --policy){given}")
    if not compare and out_dir is None:
        raise UserInputError(f"{modes[0]} needs --out DIR (where metrics.json, equity.csv, trades.csv and report.html go)")
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise UserInputError(f"{out_dir}: exists and is not a folder; choose another --out")
    start, end = _parse_day("--start", start_text), _parse_day("--end", end_text)
    if start is not None and end is not None and end <= start:
        raise UserInputError(f"--end {end_text} must be after --start {start_text}")

    from tradebot.envs.baselines import get_baseline
    from tradebot.envs.engine_config import load_engine_config
    from tradebot.envs.performance import metrics_from_result
    from tradebot.envs.window import BacktestWindow
    from tradebot.features.bars import load_bars

    baseline = get_baseline(strategy) if strategy is not None else None  # unknown name: exit 2 before any work
    setup = None
    if policy_source is not None:
        with _spinner(f"loading policy {policy_source}"):
            setup = _load_policy(policy_source, config_path)
        config = setup.env_config.engine
    else:
        config = load_engine_config(config_path)
    with _spinner(f"loading {data_path}"):
        bars = load_bars(data_path)
    if len(bars) < 2:
        raise UserInputError(f"{data_path}: only {len(bars)} bar(s); a backtest needs at least 2")

    policy_run, notes = None, []
    if setup is not None:
        from tradebot.rl.backtest_policy import backtest_policy

        with _spinner(f"policy: acting on {data_path.name}"):
            policy_run = backtest_policy(setup.policy, bars, setup.env_config, start, end)
        window = policy_run.window
        notes = setup.notes(window)
    else:
        window = BacktestWindow.from_dates(bars, start, end)

    if compare:
        _compare(data_path, bars, window, config, seed, out_dir, setup, policy_run, notes)
        return

    run_config = config
    if setup is not None:
        assert policy_run is not None
        result, name, params, source = policy_run.result, "policy", None, None
    elif baseline is not None:
        with _spinner(f"{baseline.name}: computing signals"):
            result, run_config = window.run_baseline(baseline, config, seed)
        name, params, source = baseline.name, dict(baseline.params), None
    else:
        from tradebot.envs.actions_file import backtest_actions_file

        assert actions_path is not None
        result = backtest_actions_file(actions_path, bars, window, config)
        name, params, source = f"actions:{actions_path.name}", None, actions_path

    from tradebot.envs.backtest_report import run_record

    eval_bars = window.bars
    with _spinner(f"{name}: metrics over {len(eval_bars):,} bars"):
        metrics = metrics_from_result(result, eval_bars.timeframe)
    info = run_record(data_path, eval_bars, name, run_config, seed, params, source)
    if setup is not None:
        info["policy"] = setup.info(window, notes)
    elif window.first:
        info["warmup_bars"] = window.first
    title = f"{name} on {eval_bars.symbol or data_path.name} ({eval_bars.timeframe})"
    if setup is not None:
        title = f"policy {setup.source} on {eval_bars.symbol or data_path.name} ({eval_bars.timeframe})"

    assert out_dir is not None
    decisions = policy_run.decisions if policy_run is not None else None
    _write_run(out_dir, result, eval_bars, metrics, info, title, decisions)
    console = _stdout()
    console.print(_summary_table(title, metrics))
    for note in (*metrics.notes, *notes):
        console.print(f"note: {note}")
    console.print(f"wrote {out_dir}/metrics.json, equity.csv, trades.csv, report.html"
                  + (", decisions.csv" if decisions is not None else ""))


def _compare(data_path: Path, bars: Bars, window: BacktestWindow, config: EngineConfig, seed: int,
             out_dir: Path | None, setup: PolicySetup | None, policy_run: PolicyBacktest | None,
             notes: list[str]) -> None:
    from tradebot.envs.backtest_report import run_record, write_compare_files
    from tradebot.envs.baselines import BASELINES
    from tradebot.envs.performance import metrics_from_result

    eval_bars = window.bars
    rows: dict[str, Metrics] = {}
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("baselines", total=len(BASELINES))
        for name, baseline in BASELINES.items():
            progress.update(task, description=f"backtesting {name}")
            result, _ = window.run_baseline(baseline, config, seed)
            rows[name] = metrics_from_result(result, eval_bars.timeframe)
            progress.advance(task)
    params: dict[str, dict[str, Any]] = {name: dict(b.params) for name, b in BASELINES.items()}
    if setup is not None:
        assert policy_run is not None
        rows["policy"] = metrics_from_result(policy_run.result, eval_bars.timeframe)
        params["policy"] = {"model": setup.source}

    what = "Baselines and the policy" if setup is not None else "Baselines"
    span = (f"{len(eval_bars):,} bars" if window.first == 0 and len(eval_bars) == len(bars)
            else f"{len(eval_bars):,} bars, {eval_bars.index[0].date()} to {eval_bars.index[-1].date()}")
    title = f"{what} on {eval_bars.symbol or data_path.name} ({eval_bars.timeframe}, {span}), after costs"
    console = _stdout()
    console.print(_compare_table(rows, title))
    if setup is not None:
        console.print(f"policy: {setup.source} (training config: {setup.config_location or 'none saved'})")
    for note in notes:
        console.print(f"note: {note}")
    if out_dir is not None:
        run = run_record(data_path, eval_bars, "compare", config, seed)
        if window.first:
            run["warmup_bars"] = window.first
        write_compare_files(out_dir, rows, params, run, setup.info(window, notes) if setup is not None else None)
        written = "compare.csv, compare.json"
        if setup is not None:
            assert policy_run is not None
            info = {**run_record(data_path, eval_bars, "policy", config, seed), "policy": setup.info(window, notes)}
            _write_run(out_dir, policy_run.result, eval_bars, rows["policy"], info,
                       f"policy {setup.source} on {eval_bars.symbol or data_path.name} ({eval_bars.timeframe})",
                       policy_run.decisions)
            written += ", metrics.json, equity.csv, trades.csv, report.html"
            written += (", decisions.csv" if policy_run.decisions is not None else "") + " (the policy)"
        console.print(f"wrote {out_dir}/{written}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(backtest())
