"""A feature matrix written to Parquet: one row per bar, one float64 column per feature, with the
pipeline's description in the schema metadata (key ``tradebot.features``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tradebot.core.errors import UserInputError
from tradebot.core.files import atomic_writer
from tradebot.features.bars import load_bars
from tradebot.features.pipeline import FeaturePipeline, load_feature_config

PARQUET_METADATA_KEY = b"tradebot.features"  # JSON: config, timeframe, has_volume, feature_names, warmup_bars


@dataclass(frozen=True)
class FeatureFile:
    """What ``build_feature_file`` wrote."""

    path: Path
    frame: pd.DataFrame
    symbol: str | None
    timeframe: str
    warmup_bars: int
    skipped: tuple[str, ...]

    @property
    def feature_names(self) -> list[str]:
        return list(self.frame.columns)


def build_feature_file(data: Path, out: Path, config_path: Path | None = None, symbol: str | None = None,
                       on_step: Callable[[str], None] = lambda message: None) -> FeatureFile:
    """Compute the feature matrix of the bar file ``data`` and write it atomically to ``out`` (.parquet).
    ``on_step`` hears each stage (for a progress display). Nothing is written on bad input."""
    if not out.parent.is_dir():
        raise UserInputError(f"{out}: directory {out.parent} does not exist; create it or choose another --out")
    if out.suffix.lower() not in (".parquet", ".pq"):
        raise UserInputError(f"{out}: --out must be a .parquet file")
    if out.resolve() == data.resolve():
        raise UserInputError(f"{out}: --out is the bar file itself; choose another output file")
    config = load_feature_config(config_path)
    on_step(f"reading {data.name}")
    bars = load_bars(data, symbol=symbol)
    pipe = FeaturePipeline.for_bars(bars, config)
    on_step(f"computing {len(pipe.feature_names)} features over {len(bars):,} bars")
    frame = pipe.transform(bars)
    on_step(f"writing {out.name}")
    write_feature_matrix(frame, out, {"symbol": bars.symbol, "warmup_bars": pipe.warmup_bars,
                                      "zscored": list(pipe.zscored), **pipe.describe()})
    return FeatureFile(path=out, frame=frame, symbol=bars.symbol, timeframe=bars.timeframe,
                       warmup_bars=pipe.warmup_bars, skipped=tuple(pipe.skipped))


def write_feature_matrix(frame: pd.DataFrame, out: Path, meta: dict) -> None:
    """``frame`` as Parquet with ``meta`` (JSON) under ``PARQUET_METADATA_KEY``, written atomically."""
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
