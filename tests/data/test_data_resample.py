"""tradebot.features.resample: NSE-session bins anchored at 09:15, labelled by start."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tradebot.features.bars import Bars, load_bars
from tradebot.features.resample import canonical_timeframe, resample
from tradebot.core.errors import UserInputError

IST = "Asia/Kolkata"
SHARED = Path("/work/shared/data")


def test_resample_1m_sample_to_5m_equals_5m_sample_exactly(sample):
    m1, m5 = load_bars(sample["1m"]), load_bars(sample["5m"])
    out = resample(m1, "5m")
    assert out.dropped_outside_session == 0 and out.bars.timeframe == "5m"
    days = out.bars.index.normalize().unique()
    expected = m5.frame[m5.index.normalize().isin(days)]
    assert len(expected) == 9 * 75
    pd.testing.assert_frame_equal(out.bars.frame, expected)


@pytest.mark.skipif(not (SHARED / "NSE_NIFTY50-INDEX_1m.csv.gz").exists(), reason="shared data not mounted")
def test_resample_shared_1m_to_5m_equals_shared_5m_file():
    out = resample(load_bars(SHARED / "NSE_NIFTY50-INDEX_1m.csv.gz"), "5m").bars
    pd.testing.assert_frame_equal(out.frame, load_bars(SHARED / "NSE_NIFTY50-INDEX_5m.csv.gz").frame)


def test_resample_1h_labels_and_last_bin_covers_1515_to_1530(sample):
    m1 = load_bars(sample["1m"])
    h = resample(m1, "1h").bars
    assert h.timeframe == "1h" and len(h) == 9 * 7
    day = h.frame[h.index.normalize() == pd.Timestamp("2021-03-01", tz=IST)]
    assert [t.strftime("%H:%M") for t in day.index] == ["09:15", "10:15", "11:15", "12:15", "13:15", "14:15", "15:15"]
    src = m1.frame[(m1.index >= pd.Timestamp("2021-03-01 15:15", tz=IST)) &
                   (m1.index < pd.Timestamp("2021-03-01 15:30", tz=IST))]
    assert len(src) == 15
    last = day.iloc[-1]
    assert last["open"] == src["open"].iloc[0] and last["close"] == src["close"].iloc[-1]
    assert last["high"] == src["high"].max() and last["low"] == src["low"].min()
    first = day.iloc[0]
    src0 = m1.frame[(m1.index >= pd.Timestamp("2021-03-01 09:15", tz=IST)) &
                    (m1.index < pd.Timestamp("2021-03-01 10:15", tz=IST))]
    assert len(src0) == 60 and first["high"] == src0["high"].max() and first["close"] == src0["close"].iloc[-1]


def test_resample_1d_one_bar_per_session_labelled_midnight(sample):
    m1 = load_bars(sample["1m"])
    d = resample(m1, "1d").bars
    assert d.timeframe == "1d" and len(d) == 9
    assert (d.index == d.index.normalize()).all() and str(d.index.tz) == IST
    first_day = m1.frame[m1.index.normalize() == d.index[0]]
    row = d.frame.iloc[0]
    assert (row["open"], row["close"]) == (first_day["open"].iloc[0], first_day["close"].iloc[-1])
    assert (row["high"], row["low"]) == (first_day["high"].max(), first_day["low"].min())


def test_resample_5m_to_15m_and_1h_matches_resampling_from_1m(sample):
    m1 = load_bars(sample["1m"])
    m5 = resample(m1, "5m").bars
    for tf in ("15m", "1h", "1d"):
        pd.testing.assert_frame_equal(resample(m5, tf).bars.frame, resample(m1, tf).bars.frame)


def test_resample_drops_bars_outside_session_and_counts_them(make_1m):
    raw = make_1m(["2021-03-01"])
    extra = raw.iloc[[0, 1]].copy()
    extra["timestamp"] = [pd.Timestamp("2021-03-01 09:08", tz=IST), pd.Timestamp("2021-03-01 15:35", tz=IST)]
    raw = pd.concat([raw, extra]).sort_values("timestamp").reset_index(drop=True)
    bars = Bars.from_frame(raw, symbol="NSE:SBIN-EQ")
    out = resample(bars, "15m")
    assert out.dropped_outside_session == 2 and len(out.bars) == 25  # ceil(375 / 15)
    assert out.bars.index[0].strftime("%H:%M") == "09:15" and out.bars.index[-1].strftime("%H:%M") == "15:15"


def test_resample_skips_empty_bins(make_1m):
    bars = Bars.from_frame(make_1m(["2021-03-01"], minutes=[[0, 1, 2, 30, 31]]), symbol="NSE:SBIN-EQ")
    out = resample(bars, "5m").bars
    assert [t.strftime("%H:%M") for t in out.index] == ["09:15", "09:45"]


@pytest.mark.parametrize("source,target,message", [
    ("5m", "1m", "finer"), ("5m", "7m", "not a multiple"), ("15m", "20m", "not a multiple"), ("1d", "1h", "daily"),
])
def test_resample_refuses_finer_or_non_multiple(source, target, message, sample):
    bars = load_bars(sample["1d"]) if source == "1d" else load_bars(sample["5m"]).slice(0, 150)
    if source == "15m":
        bars = resample(bars, "15m").bars
    with pytest.raises(UserInputError, match=message):
        resample(bars, target)


def test_resample_refuses_non_nse_exchange(make_1m):
    bars = Bars.from_frame(make_1m(["2021-03-01"]), symbol="CRYPTO:BTC-USD")
    with pytest.raises(UserInputError, match="NSE session"):
        resample(bars, "5m")


@pytest.mark.parametrize("text,canon", [("5m", "5m"), ("60m", "1h"), ("1H", "1h"), ("120m", "2h"), ("1d", "1d")])
def test_canonical_timeframe(text, canon):
    assert canonical_timeframe(text) == canon


def test_canonical_timeframe_rejects_garbage():
    with pytest.raises(UserInputError):
        canonical_timeframe("5x")


# ---------------------------------------------------------------- property
_DAYS = ["2021-03-01", "2021-03-02", "2021-03-04"]


@st.composite
def _bars(draw):
    n_days = draw(st.integers(1, 3))
    minutes = [sorted(draw(st.sets(st.integers(0, 374), min_size=1, max_size=60))) for _ in range(n_days)]
    total = sum(len(m) for m in minutes)
    price = st.floats(1.0, 1e5, allow_nan=False, allow_infinity=False)
    opens = draw(st.lists(price, min_size=total, max_size=total))
    closes = draw(st.lists(price, min_size=total, max_size=total))
    ups = draw(st.lists(st.floats(0, 50), min_size=total, max_size=total))
    downs = draw(st.lists(st.floats(0, 0.9), min_size=total, max_size=total))
    vols = draw(st.lists(st.integers(0, 10**9), min_size=total, max_size=total))
    stamps = [pd.Timestamp(f"{_DAYS[i]} 09:15", tz=IST) + pd.Timedelta(minutes=m)
              for i, mins in enumerate(minutes) for m in mins]
    o, c = np.array(opens), np.array(closes)
    frame = pd.DataFrame({"timestamp": pd.DatetimeIndex(stamps), "open": o, "high": np.maximum(o, c) + np.array(ups),
                          "low": np.minimum(o, c) * (1 - np.array(downs)), "close": c,
                          "volume": np.array(vols, dtype="float64")})
    return Bars.from_frame(frame, symbol="NSE:SBIN-EQ", timeframe="1m")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bars=_bars(), target=st.sampled_from(["1m", "3m", "5m", "15m", "1h", "2h", "1d"]))
def test_resample_preserves_volume_sum_and_price_extremes_per_session(bars, target):
    out = resample(bars, target).bars
    src_day = bars.index.normalize()
    out_day = out.index.normalize()
    assert list(src_day.unique()) == list(out_day.unique())
    for day in src_day.unique():
        s = bars.frame[src_day == day]
        o = out.frame[out_day == day]
        assert o["volume"].sum() == s["volume"].sum()
        assert o["high"].max() == s["high"].max() and o["low"].min() == s["low"].min()
        assert o["open"].iloc[0] == s["open"].iloc[0] and o["close"].iloc[-1] == s["close"].iloc[-1]
    # every output bar is a valid bar, labelled on the session grid
    assert (out.frame["high"] >= out.frame[["open", "close"]].max(axis=1)).all()
    assert (out.frame["low"] <= out.frame[["open", "close"]].min(axis=1)).all()
    if target != "1d":
        from tradebot.core.nse_time import minutes_into_session, timeframe_minutes

        assert (minutes_into_session(out.index) % timeframe_minutes(target) == 0).all()
    Bars.from_frame(out.frame, symbol=out.symbol)  # passes strict validation
