"""A paper replay run for the crash test, run as a subprocess (and in-process for the reference).

    python tests/live/live_crash_run.py BARS.csv ACTIONS.npy JOURNAL.db PAPER.db [STAGE N]

With ``STAGE N`` the process SIGKILLs itself the N-th time the loop reaches that stage (a crash at
an exact point: after the broker processed a bar but before the journal knows, after a decision was
journaled but before its order went out, after the broker accepted an order but before the journal
recorded it, ...). It prints ``READY`` once reconciled, so the parent can also kill it at a random time.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import numpy as np

from tradebot.envs.engine import EngineConfig
from tradebot.features.bars import load_bars
from tradebot.features.pipeline import FeatureConfig, FeaturePipeline
from tradebot.live.feeds import ReplayFeed
from tradebot.live.journal import Journal
from tradebot.live.loop import LoopConfig, TradingLoop
from tradebot.live.observations import StreamFeatures
from tradebot.live.paper import PaperBroker
from tradebot.live.policies import ScheduledPolicy
from tradebot.live.risk import RiskConfig

SYMBOL = "NSE:NIFTY50-INDEX"
# features with a rolling normaliser, so that restoring the stream's checkpoint is exercised for real
FEATURES = FeatureConfig.model_validate({
    "returns": {"horizons": [1, 5]}, "trend": {"sma": [10], "ema": [10]}, "momentum": {"enabled": False},
    "volatility": {"enabled": False}, "volume": {"enabled": False}, "regime": {"enabled": False},
    "calendar": {"enabled": False}, "candles": {"enabled": False},
    "normalisation": {"method": "rolling", "window": 60, "min_periods": 20}})
RISK = RiskConfig(max_daily_loss=0.05, max_drawdown=0.3)


def build(bars_csv: str | Path, actions_npy: str | Path, journal: str | Path, paper: str | Path,
          on_stage=None) -> TradingLoop:
    bars = load_bars(bars_csv, symbol=SYMBOL)
    actions = np.load(actions_npy)
    engine = EngineConfig()
    feed = ReplayFeed(bars)
    broker = PaperBroker(engine, [SYMBOL], paper, clock=feed.clock, rate_limits=(10, 200))
    pipe = FeaturePipeline.for_bars(bars, FEATURES)
    return TradingLoop(feed=feed, broker=broker, policy=ScheduledPolicy.from_actions(bars, actions),
                       journal=Journal(journal, run="crash"), features={SYMBOL: StreamFeatures(pipe)},
                       engine=engine, risk=RISK, config=LoopConfig(run="crash", checkpoint_every=40),
                       on_stage=on_stage)


def main(argv: list[str]) -> int:
    bars_csv, actions_npy, journal, paper = argv[:4]
    kill_stage, kill_at = (argv[4], int(argv[5])) if len(argv) > 5 else (None, 0)
    seen = 0

    def on_stage(stage: str, symbol: str, ts: int) -> None:
        nonlocal seen
        if stage == kill_stage:
            seen += 1
            if seen == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    loop = build(bars_csv, actions_npy, journal, paper, on_stage)
    loop.start()
    print("READY", flush=True)
    summary = loop.run()
    loop.journal.close()
    print("DONE", summary.bars, summary.resumed_bars, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
