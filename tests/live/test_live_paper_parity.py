"""Paper broker vs backtester: a paper session replaying the sample bars with a baseline's actions as
the policy makes exactly the trades (and the equity curve) that ``run_backtest`` makes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tradebot.envs.backtest import run_backtest
from tradebot.envs.baselines import BASELINES
from tradebot.envs.engine_config import EngineConfig
from tradebot.envs.market_data import compute_atr
from tradebot.features.pipeline import FeaturePipeline
from tradebot.live.feeds import ReplayFeed
from tradebot.live.journal import Journal
from tradebot.live.loop import LoopConfig, TradingLoop
from tradebot.live.observations import StreamFeatures
from tradebot.live.paper import PaperBroker
from tradebot.live.policies import baseline_policy
from live_helpers import LOOSE_RISK, MINIMAL_FEATURES, replay_loop, sample_bars

EXACT = ["entry_time", "exit_time", "side", "qty", "entry_price", "exit_price", "stop_price", "take_profit_price",
         "entry_costs", "exit_costs", "pnl", "exit_reason"]


def _backtest_trades(result) -> pd.DataFrame:
    t = result.trades.copy()
    t["side"] = t["side"].astype(str)
    t["exit_reason"] = t["exit_reason"].astype(str)
    for col in ("entry_time", "exit_time"):
        t[col] = t[col].dt.as_unit("ns")
    return t[EXACT].reset_index(drop=True)


def _paper_trades(journal: Journal) -> pd.DataFrame:
    return journal.trades()[EXACT].reset_index(drop=True)


def test_paper_run_on_the_whole_sample_makes_exactly_the_backtest_trades():
    bars = sample_bars()
    engine = EngineConfig()
    actions = BASELINES["sma_crossover"](bars, engine)
    atr = compute_atr(bars, engine.atr_period)  # what run_backtest uses by default
    expected = run_backtest(bars, actions, engine)
    loop = replay_loop(bars, actions, atr, engine=engine)
    summary = loop.run()
    got = _paper_trades(loop.journal)
    want = _backtest_trades(expected)
    assert summary.bars == len(bars)
    assert len(want) > 300  # longs and shorts, stops, take-profits, square-offs, the early close of 2021-02-24
    assert set(want["exit_reason"]) >= {"stop", "take_profit", "square_off", "signal"}
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    equity = loop.journal.equity()["equity"]
    np.testing.assert_array_equal(equity.to_numpy(), expected.equity.to_numpy())
    # the session closed on 2021-02-24 at 10:05 (exchange outage): the replay told the broker, as the data does
    outage = want[want["exit_time"].dt.strftime("%Y-%m-%d") == "2021-02-24"]
    assert (outage["exit_time"].dt.strftime("%H:%M") == "10:05").any()
    assert loop.journal.positions() == {}


def test_paper_run_with_the_feature_stream_matches_the_backtest_on_the_pipeline_atr():
    bars = sample_bars().slice(0, 1500)
    engine = EngineConfig()
    pipe = FeaturePipeline.for_bars(bars, MINIMAL_FEATURES)
    policy = baseline_policy("random", bars, engine, seed=7, p_entry=0.1, p_exit=0.1)
    feed = ReplayFeed(bars)
    loop = TradingLoop(feed=feed, broker=PaperBroker(engine, [bars.symbol], clock=feed.clock), policy=policy,
                       journal=Journal(), features={bars.symbol: StreamFeatures(pipe)}, engine=engine,
                       risk=LOOSE_RISK, config=LoopConfig(run="parity"))
    loop.run()
    actions = np.array([policy.schedule[bars.symbol][t] for t in bars.index.as_unit("ns").asi8])
    want = _backtest_trades(run_backtest(bars, actions, engine, atr=pipe.atr(bars).to_numpy()))
    got = _paper_trades(loop.journal)
    assert len(want) > 50
    # the stream's ATR equals the batch ATR to ~1e-13: the same trades, prices equal to rounding
    discrete = ["entry_time", "exit_time", "side", "qty", "exit_reason"]
    pd.testing.assert_frame_equal(got[discrete], want[discrete], check_exact=True)
    for col in ["entry_price", "exit_price", "stop_price", "take_profit_price", "pnl"]:
        np.testing.assert_allclose(got[col], want[col], rtol=1e-9, atol=1e-6)
    decisions = loop.journal.db.execute("SELECT COUNT(*), COUNT(DISTINCT features_hash) FROM decisions").fetchone()
    assert decisions[0] == len(bars) and decisions[1] > len(bars) // 2


@pytest.mark.parametrize("name", ["intraday_long", "rsi_reversion"])
def test_paper_parity_holds_for_other_baselines_on_a_month(name):
    bars = sample_bars().between("2021-03-01", "2021-04-01")
    engine = EngineConfig(slippage_bps=2.0, take_profit_atr_mult=2.0)
    actions = BASELINES[name](bars, engine)
    atr = compute_atr(bars, engine.atr_period)
    loop = replay_loop(bars, actions, atr, engine=engine)
    loop.run()
    want = _backtest_trades(run_backtest(bars, actions, engine))
    assert len(want) > 5
    pd.testing.assert_frame_equal(_paper_trades(loop.journal), want, check_exact=True)
