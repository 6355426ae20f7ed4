"""``tradebot features``: build the model's feature matrix from a bar file.

Exit codes: 0 written; 2 the bar file, config or flags are wrong (one ``error:`` line on stderr
naming the file, line or key and the fix; nothing is written).
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


@click.group("features", context_settings={"help_option_names": ["-h", "--help"]})
def features() -> None:
    """Compute model features (indicators, returns, regime, calendar, candles) from bars."""


@features.command("build")
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--out", "-o", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Parquet file to write (written to a temp file, then moved into place).")
@click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="YAML file whose 'features:' section sets the feature groups and normalisation "
                   "(see experiments/features.yaml). Default: the built-in feature set.")
@click.option("--symbol", default=None,
              help="Fyers symbol of the bars, e.g. NSE:SBIN-EQ. Default: from a file name such as "
                   "NSE_SBIN-EQ_1d.csv.gz.")
def build(data: Path, out: Path, config_path: Path | None, symbol: str | None) -> None:
    """Compute the normalised feature matrix of the bar file DATA and write it to --out as Parquet.

    \b
    DATA: CSV, CSV.gz or Parquet bars with timestamp,open,high,low,close,volume (timestamps with
    a UTC offset). The output has one row per bar, indexed by timestamp, one float64 column per
    feature (names and formulas: features/pipeline.py). Rows in the warm-up (the bars the longest
    indicator and the normaliser need) hold NaN; every later row is complete. Volume features are
    skipped for bars without volume (index bars such as NIFTY 50), time-of-day ones for daily bars.
    The Parquet schema metadata 'tradebot.features' records the config and feature names.

    \b
    Example:
      tradebot features build data/sample/NSE_NIFTY50-INDEX_5m.csv.gz --out nifty_5m_features.parquet
    """
    from tradebot.features.feature_file import build_feature_file

    err_console = Console(stderr=True)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err_console,
                  transient=True, disable=not err_console.is_terminal) as progress:
        task = progress.add_task("starting")
        result = build_feature_file(data, out, config_path, symbol,
                                    on_step=lambda message: progress.update(task, description=message))

    frame, warmup = result.frame, result.warmup_bars
    console = Console(highlight=False, soft_wrap=True)
    name = f"{result.symbol or data.name} {result.timeframe}"
    console.print(f"wrote {out}: {len(frame):,} rows x {len(result.feature_names)} features ({name})")
    if warmup >= len(frame):
        console.print(f"warning: all {len(frame):,} rows are warm-up (the features need {warmup:,} bars); "
                      "use shorter windows for this data (see the note in experiments/features.yaml)")
    else:
        console.print(f"warm-up: first {warmup:,} rows hold NaN; complete from {frame.index[warmup].isoformat()}")
    console.print(f"skipped: {', '.join(result.skipped) if result.skipped else 'none'}")
