"""``tradebot features``: build the model's feature matrix from a bar file.

Exit codes: 0 written; 2 the bar file, config or flags are wrong (one ``error:`` line on stderr
naming the file, line or key and the fix; nothing is written).
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from tradebot.core.files import atomic_writer
from tradebot.core.errors import UserInputError

PARQUET_METADATA_KEY = b"tradebot.features"  # JSON: config, timeframe, has_volume, feature_names, warmup_bars


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
    from tradebot.features.bars import load_bars
    from tradebot.features.pipeline import FeaturePipeline, load_feature_config

    if not out.parent.is_dir():
        raise UserInputError(f"{out}: directory {out.parent} does not exist; create it or choose another --out")
    if out.suffix.lower() not in (".parquet", ".pq"):
        raise UserInputError(f"{out}: --out must be a .parquet file")
    if out.resolve() == data.resolve():
        raise UserInputError(f"{out}: --out is the bar file itself; choose another output file")
    config = load_feature_config(config_path)

    err_console = Console(stderr=True)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err_console,
                  transient=True, disable=not err_console.is_terminal) as progress:
        task = progress.add_task(f"reading {data.name}")
        bars = load_bars(data, symbol=symbol)
        pipe = FeaturePipeline.for_bars(bars, config)
        progress.update(task, description=f"computing {len(pipe.feature_names)} features over {len(bars):,} bars")
        frame = pipe.transform(bars)
        progress.update(task, description=f"writing {out.name}")
        _write_parquet_atomic(frame, out, {
            "symbol": bars.symbol, "warmup_bars": pipe.warmup_bars, "zscored": list(pipe.zscored),
            **pipe.describe()})

    console = Console(highlight=False, soft_wrap=True)
    name = f"{bars.symbol or data.name} {bars.timeframe}"
    console.print(f"wrote {out}: {len(frame):,} rows x {len(pipe.feature_names)} features ({name})")
    if pipe.warmup_bars >= len(frame):
        console.print(f"warning: all {len(frame):,} rows are warm-up (the features need {pipe.warmup_bars:,} bars); "
                      "use shorter windows for this data (see the note in experiments/features.yaml)")
    else:
        console.print(f"warm-up: first {pipe.warmup_bars:,} rows hold NaN; complete from "
                      f"{frame.index[pipe.warmup_bars].isoformat()}")
    console.print(f"skipped: {', '.join(pipe.skipped) if pipe.skipped else 'none'}")


def _write_parquet_atomic(frame, out: Path, meta: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=True)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           PARQUET_METADATA_KEY: json.dumps(meta).encode()})
    try:
        with atomic_writer(out) as fh:
            pq.write_table(table, fh)
    except OSError as err:
        raise UserInputError(f"{out}: cannot write ({err.strerror or err}); check the path and permissions") from None
