"""BarBuilder (ticks -> NSE-session bars) and ReplayFeed (a bar file as a live feed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tradebot.features.resample import resample
from tradebot.live.bar_builder import BarBuilder
from tradebot.live.feeds import ReplayFeed
from tradebot.core.nse_time import bar_end, bar_start_for
from tradebot.live.ports import NS_PER_SECOND, Bar, Tick, to_ist, to_ns
from live_helpers import SAMPLE_1M, sample_bars
from tradebot.core.errors import UserInputError

SYM = "NSE:NIFTY50-INDEX"


def _ns(text: str) -> int:
    return to_ns(pd.Timestamp(text, tz="Asia/Kolkata"))


def test_ticks_from_one_minute_bars_build_the_resampled_five_minute_bars():
    one = sample_bars(SAMPLE_1M).between("2021-03-08", "2021-03-10")
    f = one.frame
    builder = BarBuilder("5m", grace_s=1.0)
    built: list[Bar] = []
    for ts, row in zip(one.index.as_unit("ns").asi8, f.itertuples()):
        # four prints per minute bar, in an order that makes its high and low
        for k, price in enumerate((row.open, row.high, row.low, row.close)):
            built += builder.on_tick(Tick(SYM, int(ts) + k * 10 * NS_PER_SECOND, price, row.volume / 4))
    built += builder.on_time(int(one.index[-1].value) + 10 * 60 * NS_PER_SECOND)
    want = resample(one, "5m").bars.frame
    got = pd.DataFrame([{"timestamp": to_ist(b.ts), "open": b.open, "high": b.high, "low": b.low, "close": b.close,
                         "volume": b.volume} for b in built]).set_index("timestamp")
    assert len(got) == len(want) == 150
    np.testing.assert_array_equal(got.index.as_unit("ns").asi8, want.index.as_unit("ns").asi8)
    np.testing.assert_allclose(got[["open", "high", "low", "close", "volume"]].to_numpy(),
                               want[["open", "high", "low", "close", "volume"]].to_numpy())
    assert [b.last_of_session for b in built].count(True) == 2 and built[74].last_of_session
    assert all(b.end - b.ts == 300 * NS_PER_SECOND for b in built)


def test_a_bar_closes_on_the_timer_after_its_grace_and_late_ticks_are_dropped():
    b = BarBuilder("5m", grace_s=2.0)
    assert b.on_tick(Tick(SYM, _ns("2024-01-02 09:16:10"), 100.0)) == []
    assert b.on_tick(Tick(SYM, _ns("2024-01-02 09:19:59"), 101.0)) == []
    assert b.on_time(_ns("2024-01-02 09:20:01")) == []  # inside the grace
    (bar,) = b.on_time(_ns("2024-01-02 09:20:02"))
    assert (bar.ts, bar.open, bar.high, bar.low, bar.close) == (_ns("2024-01-02 09:15"), 100.0, 101.0, 100.0, 101.0)
    assert b.on_tick(Tick(SYM, _ns("2024-01-02 09:19:59.5"), 99.0)) == []  # a print for the closed bar
    assert b.late_ticks == 1
    assert b.on_tick(Tick(SYM, _ns("2024-01-02 09:00:00"), 99.0)) == []  # pre-open
    assert b.on_tick(Tick(SYM, _ns("2024-01-02 15:30:00"), 99.0)) == []  # after the close
    assert b.outside_ticks == 2
    assert b.pending(SYM) is None
    with pytest.raises(ValueError, match="bad tick"):
        b.on_tick(Tick(SYM, _ns("2024-01-02 10:00"), -1.0))


def test_hourly_and_daily_bars_follow_the_session():
    assert bar_start_for(_ns("2024-01-02 15:20"), "1h") == _ns("2024-01-02 15:15")
    assert bar_end(_ns("2024-01-02 15:15"), "1h") == _ns("2024-01-02 15:30")  # the short last hourly bar
    assert bar_start_for(_ns("2024-01-02 11:00"), "1d") == _ns("2024-01-02 00:00")  # the daily files' label
    assert bar_end(_ns("2024-01-02 00:00"), "1d") == _ns("2024-01-02 15:30")
    b = BarBuilder("1h")
    b.on_tick(Tick(SYM, _ns("2024-01-02 15:29:59"), 10.0))
    (last,) = b.on_time(_ns("2024-01-02 16:00"))
    assert last.ts == _ns("2024-01-02 15:15") and last.last_of_session


def test_replay_feed_emits_bars_at_their_end_and_resumes():
    bars = sample_bars().between("2021-02-23", "2021-02-26")
    feed = ReplayFeed(bars)
    out = list(feed)
    assert [b.ts for b in out] == bars.index.as_unit("ns").asi8.tolist()
    assert feed.clock.now_ns() == out[-1].end and out[-1].final and not any(b.final for b in out[:-1])
    # 2021-02-24: trading stopped at 10:05 (outage). The data says so; the clock alone cannot
    early = [b for b in out if to_ist(b.ts).strftime("%Y-%m-%d %H:%M") == "2021-02-24 10:05"][0]
    assert early.last_of_session
    clocked = {b.ts: b for b in ReplayFeed(bars, session_ends="clock")}
    assert not clocked[early.ts].last_of_session
    assert sum(b.last_of_session for b in out) == 3 and sum(b.last_of_session for b in clocked.values()) == 2
    again = ReplayFeed(bars)
    again.subscribe([SYM], after={SYM: out[99].ts})
    assert [b.ts for b in again] == [b.ts for b in out[100:]]


def test_replay_speed_sleeps_market_time_and_skips_the_night():
    bars = sample_bars().between("2021-03-01", "2021-03-03")
    slept: list[float] = []
    list(ReplayFeed(bars, speed=60.0, sleep=slept.append))
    assert len(slept) == len(bars) - 1
    assert set(np.round(slept, 9)) == {5.0}  # 300 s of market time at 60x, the night counted as one bar


def test_replay_merges_symbols_by_bar_end_and_checks_its_input():
    a = sample_bars().between("2021-03-01", "2021-03-02")
    b = type(a)(frame=a.frame * 2, symbol="NSE:OTHER-EQ", timeframe="5m")
    out = list(ReplayFeed({a.symbol: a, b.symbol: b}))
    assert len(out) == 2 * len(a) and [x.symbol for x in out[:2]] == sorted([a.symbol, b.symbol])
    assert all(out[i].end <= out[i + 1].end for i in range(len(out) - 1))
    with pytest.raises(UserInputError, match="speed"):
        ReplayFeed(a, speed=0)
    with pytest.raises(UserInputError, match="no replay data"):
        ReplayFeed(a).subscribe(["NSE:X-EQ"])
