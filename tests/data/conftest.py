"""Fixtures for the data tests: sample paths, small clean bar files, synthetic bars, the CLI."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample"
HEADER = "timestamp,open,high,low,close,volume"


@pytest.fixture(scope="session")
def sample() -> dict[str, Path]:
    """The bundled sample files (data/sample, see its PROVENANCE.md)."""
    return {
        "1m": SAMPLE / "NSE_NIFTY50-INDEX_1m.csv.gz",
        "5m": SAMPLE / "NSE_NIFTY50-INDEX_5m.csv.gz",
        "1d": SAMPLE / "NSE_SBIN-EQ_1d.csv.gz",
    }


@pytest.fixture(scope="session")
def clean_lines(sample) -> list[str]:
    """Header + the first two sessions of the 5m sample (150 bars), as text lines."""
    with gzip.open(sample["5m"], "rt") as fh:
        lines = fh.read().splitlines()
    assert lines[0] == HEADER
    return lines[:151]


@pytest.fixture
def clean_csv(tmp_path: Path, clean_lines) -> Path:
    path = tmp_path / "NSE_NIFTY50-INDEX_5m.csv"
    path.write_text("\n".join(clean_lines) + "\n")
    return path


@pytest.fixture
def cli():
    """Run ``tradebot ARGS`` in-process; returns click's Result (stdout, stderr, output, exit_code).

    Any exception other than SystemExit is re-raised: it would have reached the user as a traceback.
    """
    from tradebot.cli import main

    def run(*args, env: dict[str, str] | None = None):
        result = CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=True)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    return run


@pytest.fixture
def make_1m():
    """Factory of consistent synthetic 1m bars (IST): ``make_1m(days, minutes=None, seed=0)``.

    ``minutes``: per day, the minutes after 09:15 that have a bar (default: all 375).
    """

    def make(days: list[str], minutes: list[list[int]] | None = None, seed: int = 0) -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        stamps = []
        for i, d in enumerate(days):
            mins = range(375) if minutes is None else minutes[i]
            base = pd.Timestamp(f"{d} 09:15", tz="Asia/Kolkata")
            stamps += [base + pd.Timedelta(minutes=int(m)) for m in mins]
        n = len(stamps)
        close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
        open_ = np.r_[100.0, close[:-1]]
        high = np.maximum(open_, close) * (1 + rng.uniform(0, 5e-4, n))
        low = np.minimum(open_, close) * (1 - rng.uniform(0, 5e-4, n))
        vol = rng.integers(1, 10_000, n).astype("float64")
        return pd.DataFrame({"timestamp": pd.DatetimeIndex(stamps), "open": open_, "high": high, "low": low,
                             "close": close, "volume": vol})

    return make


def write_frame_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Write a frame like the shared files do (ISO timestamps with offset)."""
    out = frame.copy()
    out["timestamp"] = [t.isoformat() for t in out["timestamp"]]
    out.to_csv(path, index=False)
    return path


@pytest.fixture
def write_csv():
    return write_frame_csv
