"""``tradebot drift``: the live loop's drift monitors over a bar file, offline.

Exit codes: 0 every monitor ends OK; 1 a monitor reached ALARM; 3 no ALARM, but a monitor ends in WARN;
2 bad input (one ``error:`` line naming the file, key or flag and the fix).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from tradebot.cli.base import TradebotGroup


@click.group("drift", cls=TradebotGroup, context_settings={"help_option_names": ["-h", "--help"]})
def drift() -> None:
    """Drift detection: is the market still the one the model learned?"""


@drift.command("check")
@click.option("--model", required=True, help="a checkpoint folder or an MLflow model URI (models:/NAME/VERSION)")
@click.option("--data", "data", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="bar file (CSV, CSV.gz or Parquet) of the model's instrument and bar size")
@click.option("--start", default=None, help="first day watched (IST, YYYY-MM-DD); earlier bars only warm up")
@click.option("--end", default=None, help="first day not watched (IST, YYYY-MM-DD)")
@click.option("--symbol", default=None, help="Fyers symbol of the bars (default: from the file name)")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="YAML file whose 'drift:' section sets the thresholds (default: the built-in ones)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON document instead of text")
def check(model: str, data: Path, start: str | None, end: str | None, symbol: str | None, config_path: Path | None,
          as_json: bool) -> None:
    """Run the drift monitors (market features, actions, trade performance) over the bars of DATA.

    \b
    The model is backtested over the bars as `tradebot backtest --policy` does, and the monitors see
    each bar's features and the policy's action, and each closed trade, in time order, as the live
    loop feeds them. They compare with the model's reference (saved with the model by `tradebot
    train`; rebuilt from its training config for older models). Each monitor prints its final state
    (OK, WARN or ALARM), its statistic and every state change with its time.

    \b
    Exit codes: 0 every monitor ends OK; 1 a monitor reached ALARM; 3 a monitor ends in WARN
    (no ALARM); 2 bad input.

    \b
    Example:
      tradebot drift check --model models:/tradebot-ppo-lstm-demo/1 \\
          --data data/sample/NSE_NIFTY50-INDEX_5m.csv.gz --start 2021-06-01
    """
    from tradebot.core.config import load_config
    from tradebot.rl.drift import DriftConfig
    from tradebot.rl.drift.offline import drift_check

    config = load_config(DriftConfig, config_path, "drift") if config_path is not None else DriftConfig()
    result = drift_check(model, data, start=start, end=end, config=config, symbol=symbol)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        _print(result)
    click.get_current_context().exit(result.exit_code)


def _print(result) -> None:
    import pandas as pd

    from tradebot.core.nse_time import IST

    click.echo(f"{result.bars:,} bar(s), {result.trades} closed trade(s); reference {result.reference_origin}")
    for name, snap in result.snapshot.items():
        click.echo(f"  {name:<12} {snap['state']:<5}  statistic {snap['value']:.4g}  ({snap['updates']:,} update(s))")
    for t in result.transitions:
        when = pd.Timestamp(t.ts, tz="UTC").tz_convert(IST).strftime("%Y-%m-%d %H:%M")
        click.echo(f"  {when}  {t.monitor}: {t.old.value} -> {t.new.value} (statistic {t.value:.4g})")
    if not result.transitions:
        click.echo("  no state changes")
    for note in result.notes:
        click.echo(f"note: {note}")
