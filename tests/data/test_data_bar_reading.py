"""Fixes in tradebot.features.bars / tradebot.core.nse_time found while building the data commands."""

from __future__ import annotations

import pandas as pd
import pytest

from tradebot.features.bars import Bars, load_bars, read_bar_file
from tradebot.core.nse_time import detect_timeframe
from tradebot.core.errors import UserInputError


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_detect_timeframe_is_independent_of_the_index_unit(unit):
    idx = pd.date_range("2021-03-01 09:15", periods=75, freq="5min", tz="Asia/Kolkata", unit=unit)
    assert detect_timeframe(idx) == "5m"


def test_load_bars_detects_5m_in_the_5m_sample(sample):
    assert load_bars(sample["5m"]).timeframe == "5m"  # pandas 3 parses to microseconds


def test_read_bar_file_empty_file_says_empty(tmp_path):
    path = tmp_path / "e.csv"
    path.write_bytes(b"")
    with pytest.raises(UserInputError, match="file is empty"):
        read_bar_file(path)


@pytest.mark.parametrize("token", ["NaN", "nan", "null", "N/A"])
def test_read_bar_file_written_nan_tokens_are_missing_values(tmp_path, token):
    path = tmp_path / "n.csv"
    path.write_text(f"timestamp,open,high,low,close,volume\n2021-01-01T09:15:00+05:30,{token},2,1,1.5,0\n")
    raw = read_bar_file(path)
    assert raw["open"].isna().all()
    with pytest.raises(UserInputError, match="line 2 .*NaN"):
        load_bars(path)


def test_from_frame_rejects_infinite_prices():
    frame = pd.DataFrame({"open": [1.0], "high": [float("inf")], "low": [1.0], "close": [1.0], "volume": [0.0]},
                         index=pd.DatetimeIndex([pd.Timestamp("2021-01-01 09:15", tz="Asia/Kolkata")], name="timestamp"))
    with pytest.raises(UserInputError, match="infinite"):
        Bars.from_frame(frame)
