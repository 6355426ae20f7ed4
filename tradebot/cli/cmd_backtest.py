"""``tradebot backtest``: run a baseline or an action file through the fill engine, or compare baselines.

Exit codes: 0 success; 2 bad input (one ``error:`` line on stderr naming the file, line or key and
the fix; nothing is written to --out then).

The engine, numba, pandas-ta and plotly are imported when a backtest runs, not when the CLI starts,
so ``tradebot --help`` stays fast.
"""

from __future__ import annotations

import difflib
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import click
import numpy as np
import pandas as pd
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from tradebot.core.config import load_config
from tradebot.core.errors import UserInputError

if TYPE_CHECKING:
    from tradebot.envs.backtest import BacktestResult
    from tradebot.envs.engine import EngineConfig
    from tradebot.envs.performance import Metrics
    from tradebot.features.bars import Bars

CONFIG_SECTION = "engine"


# --------------------------------------------------------------------------- inputs

def load_engine_config(path: Path | None) -> EngineConfig:
    """``EngineConfig`` from the YAML file's ``engine`` section (defaults without a file).

    Unknown keys inside ``engine`` are rejected by the config class; a top-level key that looks like
    a misspelt ``engine`` is rejected too (it would otherwise be silently ignored).
    """
    from tradebot.envs.engine import EngineConfig

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
    from tradebot.envs.engine import Action

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
Baselines that carry positions overnight (hold) are computed on the period alone, so they start
flat too. With --policy and no --start, the period starts at the first session after the
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


@dataclass(frozen=True)
class _Period:
    """The bars a run may read (``history``: every bar before --end) and the first evaluated one."""

    history: Bars
    first: int

    @property
    def bars(self) -> Bars:
        return self.history if self.first == 0 else self.history.slice(self.first, len(self.history))


@dataclass(frozen=True)
class _PolicySetup:
    policy: Any  # tradebot.rl.policy.Policy
    source: str
    env_config: Any  # tradebot.envs.trading_env.EnvConfig
    config_location: str | None
    train_config: Any  # tradebot.rl.config.TrainConfig | None


def _engine_override(base: EngineConfig, path: Path | None) -> EngineConfig:
    """``base`` with the keys the --config file's engine section sets (the others stay the policy's)."""
    from tradebot.envs.engine import EngineConfig

    if path is None:
        return base
    given = load_engine_config(path)
    values = {**base.model_dump(), **given.model_dump(include=set(given.model_fields_set))}
    try:
        return EngineConfig.model_validate(values)
    except ValueError as err:
        raise UserInputError(f"{path} [engine]: {str(err).splitlines()[-1].strip()}") from None


def _load_policy(source: str, config_path: Path | None) -> _PolicySetup:
    import logging
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from tradebot.rl.backtest_policy import policy_env_config, saved_train_config
    from tradebot.rl.policy import Policy

    for name in ("ray", "ray.rllib", "mlflow"):  # after the imports: Ray sets its loggers' levels on import
        logging.getLogger(name).setLevel(logging.ERROR)

    if source.startswith(("models:/", "runs:/")):
        import mlflow

        from tradebot.rl.train import default_tracking_uri

        mlflow.set_tracking_uri(default_tracking_uri())
    policy = Policy.load(source, deterministic=True)
    saved = saved_train_config(source)
    train_config = saved.config if saved is not None else None
    engine = _engine_override(policy_env_config(train_config).engine, config_path)
    env_config = policy_env_config(train_config, engine)
    return _PolicySetup(policy, source, env_config, saved.location if saved else None, train_config)


def _baseline_result(baseline: Any, period: _Period, config: EngineConfig, seed: int) -> tuple[BacktestResult, EngineConfig]:
    """A baseline over the period, starting flat at its first bar.

    Its actions are computed on the whole history (causal indicators, warmed up) and the period's
    share of them is backtested; a baseline that carries positions overnight is computed on the
    period alone (on the history it could hold a position bought before the period).
    """
    from tradebot.envs.backtest import run_backtest
    from tradebot.envs.engine import compute_atr

    run_config = baseline.engine_config(config)
    if period.first == 0:
        return run_backtest(period.history, baseline(period.history, run_config, seed=seed), run_config), run_config
    bars = period.bars
    if not run_config.flat_at_session_end:
        return run_backtest(bars, baseline(bars, run_config, seed=seed), run_config), run_config
    actions = baseline(period.history, run_config, seed=seed)[period.first:]
    atr = compute_atr(period.history, run_config.atr_period)[period.first:] if run_config.needs_atr else None
    return run_backtest(bars, actions, run_config, atr=atr), run_config


def _actions_result(actions_path: Path, bars: Bars, period: _Period, config: EngineConfig) -> BacktestResult:
    from tradebot.envs.backtest import run_backtest
    from tradebot.envs.engine import compute_atr

    actions = read_actions_csv(actions_path, bars)[:len(period.history)][period.first:]
    atr = None
    if period.first > 0 and config.needs_atr:
        atr = compute_atr(period.history, config.atr_period)[period.first:]
    return run_backtest(period.bars, actions, config, atr=atr)


def _write_run(out_dir: Path, result: BacktestResult, bars: Bars, metrics: Metrics, info: dict[str, Any],
               title: str) -> None:
    from tradebot.envs.backtest_report import write_run_files

    with _spinner(f"writing {out_dir}"):
        write_run_files(out_dir, result, bars, metrics, info, title)


def _policy_info(setup: _PolicySetup, period: _Period, notes: list[str]) -> dict[str, Any]:
    info: dict[str, Any] = {"model": setup.source, "train_config": setup.config_location or "none saved (env defaults)",
                            "features": setup.env_config.features.model_dump(mode="json"),
                            "warmup_bars": period.first}
    if setup.train_config is not None:
        data = setup.train_config.data
        info["trained_on"] = {"train": [str(data.train.start), str(data.train.end)],
                              "validation": [str(data.validation.start), str(data.validation.end)]
                              if data.validation is not None else None}
    if notes:
        info["notes"] = notes
    return info


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
    from tradebot.envs.performance import metrics_from_result
    from tradebot.features.bars import load_bars
    from tradebot.rl.backtest_policy import evaluation_history

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
        from tradebot.rl.backtest_policy import backtest_policy, overlaps_training

        with _spinner(f"policy: acting on {data_path.name}"):
            policy_run = backtest_policy(setup.policy, bars, setup.env_config, start, end)
        period = _Period(policy_run.run.history, policy_run.run.first)
        if setup.train_config is not None:
            note = overlaps_training(setup.train_config, period.bars.index[0], period.bars.index[-1])
            if note:
                notes.append(note)
        if setup.config_location is None:
            notes.append("the model has no saved training config: the env's default features were used")
    else:
        history, first = evaluation_history(bars, start, end)
        period = _Period(history, first or 0)

    if compare:
        _compare(data_path, bars, period, config, seed, out_dir, setup, policy_run, notes)
        return

    run_config = config
    if setup is not None:
        assert policy_run is not None
        result, name, params, source = policy_run.result, "policy", None, None
    elif baseline is not None:
        with _spinner(f"{baseline.name}: computing signals"):
            result, run_config = _baseline_result(baseline, period, config, seed)
        name, params, source = baseline.name, dict(baseline.params), None
    else:
        assert actions_path is not None
        result = _actions_result(actions_path, bars, period, config)
        name, params, source = f"actions:{actions_path.name}", None, actions_path

    eval_bars = period.bars
    with _spinner(f"{name}: metrics over {len(eval_bars):,} bars"):
        metrics = metrics_from_result(result, eval_bars.timeframe)
    info = _run_info(data_path, eval_bars, name, run_config, seed, params, source)
    if setup is not None:
        info["policy"] = _policy_info(setup, period, notes)
    elif period.first:
        info["warmup_bars"] = period.first
    title = f"{name} on {eval_bars.symbol or data_path.name} ({eval_bars.timeframe})"
    if setup is not None:
        title = f"policy {setup.source} on {eval_bars.symbol or data_path.name} ({eval_bars.timeframe})"

    assert out_dir is not None
    _write_run(out_dir, result, eval_bars, metrics, info, title)
    console = _stdout()
    console.print(_summary_table(title, metrics))
    for note in (*metrics.notes, *notes):
        console.print(f"note: {note}")
    console.print(f"wrote {out_dir}/metrics.json, equity.csv, trades.csv, report.html")


def _compare(data_path: Path, bars: Bars, period: _Period, config: EngineConfig, seed: int, out_dir: Path | None,
             setup: _PolicySetup | None, policy_run: Any, notes: list[str]) -> None:
    from tradebot.envs.baselines import BASELINES
    from tradebot.envs.performance import M, metrics_from_result
    from tradebot.core.files import write_text_atomic
    from tradebot.core.serialize import json_text

    eval_bars = period.bars
    rows: dict[str, Metrics] = {}
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("baselines", total=len(BASELINES))
        for name, baseline in BASELINES.items():
            progress.update(task, description=f"backtesting {name}")
            result, _ = _baseline_result(baseline, period, config, seed)
            rows[name] = metrics_from_result(result, eval_bars.timeframe)
            progress.advance(task)
    params: dict[str, dict[str, Any]] = {name: dict(b.params) for name, b in BASELINES.items()}
    if setup is not None:
        rows["policy"] = metrics_from_result(policy_run.result, eval_bars.timeframe)
        params["policy"] = {"model": setup.source}

    what = "Baselines and the policy" if setup is not None else "Baselines"
    span = (f"{len(eval_bars):,} bars" if period.first == 0 and len(eval_bars) == len(bars)
            else f"{len(eval_bars):,} bars, {eval_bars.index[0].date()} to {eval_bars.index[-1].date()}")
    title = f"{what} on {eval_bars.symbol or data_path.name} ({eval_bars.timeframe}, {span}), after costs"
    console = _stdout()
    console.print(_compare_table(rows, title))
    if setup is not None:
        console.print(f"policy: {setup.source} (training config: {setup.config_location or 'none saved'})")
    for note in notes:
        console.print(f"note: {note}")
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        table = pd.DataFrame([m.values for m in rows.values()], index=pd.Index(list(rows), name="strategy"))
        write_text_atomic(out_dir / "compare.csv", table.loc[:, list(M.ALL)].to_csv(float_format="%.10g"))
        run = _run_info(data_path, eval_bars, "compare", config, seed)
        if period.first:
            run["warmup_bars"] = period.first
        payload = {
            "strategies": {name: {**m.to_dict(), "params": params[name]} for name, m in rows.items()},
            "run": run,
        }
        if setup is not None:
            payload["policy"] = _policy_info(setup, period, notes)
        write_text_atomic(out_dir / "compare.json", json_text(payload))
        written = "compare.csv, compare.json"
        if setup is not None:
            info = {**_run_info(data_path, eval_bars, "policy", config, seed), "policy": _policy_info(setup, period, notes)}
            _write_run(out_dir, policy_run.result, eval_bars, rows["policy"], info,
                       f"policy {setup.source} on {eval_bars.symbol or data_path.name} ({eval_bars.timeframe})")
            written += ", metrics.json, equity.csv, trades.csv, report.html (the policy)"
        console.print(f"wrote {out_dir}/{written}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(backtest())
