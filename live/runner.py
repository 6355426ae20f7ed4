"""A paper replay run over a bar file: the whole live stack wired together (what ``tradebot live --paper
--replay`` runs).

```python
summary = run_replay("data/sample/NSE_NIFTY50-INDEX_5m.csv.gz", journal="out/paper.db",
                             strategy="sma_crossover")
```

The bar file is replayed by ``ReplayFeed`` into the ``TradingLoop`` with a ``PaperBroker`` (its state in
``paper_state``, default ``<journal>.paper.db``) and the schedule of a registered baseline as the
policy. Bars before ``start`` (an ISO date) only prime the feature stream. Running it again with the
same journal resumes where it stopped (after a crash, too): the loop reconciles with the paper
broker's state and carries on after the last journaled bar.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tradebot.envs.engine_config import EngineConfig
from tradebot.envs.window import first_bar_at_or_after
from tradebot.features.bars import Bars, load_bars
from tradebot.features.pipeline import FeatureConfig, FeaturePipeline
from tradebot.rl.drift.drift_config import DriftConfig
from tradebot.live.feeds import ReplayFeed
from tradebot.live.journal import Journal
from tradebot.live.ledger import AccountLedger
from tradebot.live.loop import LoopConfig, LoopSummary, TradingLoop
from tradebot.live.observations import StreamFeatures
from tradebot.live.prometheus import LiveMetrics
from tradebot.live.paper import PaperBroker
from tradebot.live.policies import baseline_policy
from tradebot.live.risk import RiskConfig
from tradebot.core.config import FrozenConfig, load_config
from tradebot.core.errors import UserInputError

if TYPE_CHECKING:
    from tradebot.envs.backtest import BacktestResult

FYERS_RATE_LIMITS = (10, 200)  # orders per second, per minute (the paper broker enforces them like the API)


class LiveConfig(FrozenConfig):
    """The live stack's settings (YAML section ``live``): engine, risk, loop and features."""

    engine: EngineConfig = EngineConfig()
    risk: RiskConfig = RiskConfig()
    loop: LoopConfig = LoopConfig()
    features: FeatureConfig = FeatureConfig()
    drift: DriftConfig = DriftConfig()

    @classmethod
    def from_yaml(cls, path: str | Path | None, section: str = "live") -> "LiveConfig":
        return load_config(cls, path, section)


def default_paper_state(journal: str | Path) -> Path:
    p = Path(journal)
    return p.with_name(p.name + ".paper.db")


def build_replay_loop(data: str | Path | Bars, *, journal: str | Path, paper_state: str | Path | None = None,
                      strategy: str = "sma_crossover", seed: int = 0, strategy_params: dict[str, Any] | None = None,
                      config: LiveConfig | None = None, start: str | None = None, speed: float | None = None,
                      symbol: str | None = None, policy: Callable[[str, Any], Any] | None = None,
                      metrics: LiveMetrics | None = None,
                      logger: logging.Logger | None = None,
                      on_stage: Callable[[str, str, int], None] | None = None) -> TradingLoop:
    """The loop of a paper replay run (not started); ``run_replay`` runs it.

    ``policy``: any ``policy(symbol, obs)``; default: the baseline ``strategy`` as a schedule.
    """
    config = config or LiveConfig()
    bars = data if isinstance(data, Bars) else load_bars(data, symbol=symbol)
    if not bars.symbol:
        raise UserInputError(f"{data}: no symbol; pass --symbol (e.g. NSE:SBIN-EQ) or name the file "
                             "like NSE_SBIN-EQ_5m.csv.gz")
    history = bars.between(None, start) if start else None
    replay = bars.between(start, None) if start else bars
    if len(replay) == 0:
        raise UserInputError(f"{data}: no bars on or after {start}; pick an earlier --start")
    if history is not None and len(history) == 0:
        history = None
    pipeline = FeaturePipeline.for_bars(bars, config.features)
    feed = ReplayFeed(replay, speed=speed)
    paper_state = paper_state or default_paper_state(journal)
    broker = PaperBroker(config.engine, [bars.symbol], paper_state, clock=feed.clock, rate_limits=FYERS_RATE_LIMITS)
    if policy is None:
        policy = baseline_policy(strategy, bars, config.engine, seed=seed, **(strategy_params or {}))
    return TradingLoop(feed=feed, broker=broker, policy=policy, journal=Journal(journal, run=config.loop.run),
                       features={bars.symbol: StreamFeatures(pipeline, history)}, engine=config.engine,
                       risk=config.risk, config=config.loop, timeframe=bars.timeframe, metrics=metrics, logger=logger,
                       on_stage=on_stage, ledger=AccountLedger(f"{paper_state}.ledger.json"))


def replay_split(bars: Bars, start: str | None) -> int:
    """Index of the first replayed bar (``start`` and later; earlier bars only warm the features up)."""
    return first_bar_at_or_after(bars.index, start) if start else 0


def reference_backtest(bars: Bars, *, config: LiveConfig, start: str | None = None, strategy: str = "sma_crossover",
                       seed: int = 0, strategy_params: dict[str, Any] | None = None,
                       model: str | None = None) -> tuple["BacktestResult", str]:
    """A backtest of the bars a replay run trades, with its policy: what the run must equal.

    The window is the run's: every bar as history, trading from the first replayed bar. The
    decisions match the loop's: nothing before the first replayed bar, nor during the feature
    warm-up (the loop holds until its feature stream is ready); the ATR is the pipeline's, as the
    stream's; the engine is the run's. A ``model`` is backtested in-process through
    ``tradebot.rl.backtest_policy`` (recurrent state fresh at the first bar it decides on, as the served one is).
    Returns the result and a line saying what was backtested.
    """
    from tradebot.envs.baselines import get_baseline
    from tradebot.envs.engine import Action
    from tradebot.envs.window import BacktestWindow

    first = replay_split(bars, start)
    pipeline = FeaturePipeline.for_bars(bars, config.features)
    decide_from = max(first, pipeline.warmup_bars)
    if decide_from >= len(bars) - 1:
        raise UserInputError(f"the replay ends inside the features' warm-up ({pipeline.warmup_bars} bars); "
                             "replay more bars or start later")
    if model is not None:
        from tradebot.rl.backtest_policy import backtest_policy, policy_env_config, saved_train_config
        from tradebot.rl.policy import Policy

        saved = saved_train_config(model)
        env_config = policy_env_config(saved.config if saved else None, engine=config.engine)
        run = backtest_policy(Policy.load(model), bars, env_config, start=bars.index[decide_from])
        return run.result, f"model {model} from {bars.index[decide_from].isoformat()}"
    actions = np.asarray(get_baseline(strategy)(bars, config.engine, seed=seed, **(strategy_params or {})),
                         dtype=np.int8).copy()
    actions[:decide_from] = int(Action.HOLD)
    window = BacktestWindow(bars, first)
    result = window.run(window.traded(actions), config.engine, atr=pipeline.atr(bars).to_numpy())
    return result, f"strategy {strategy} (seed {seed}) from {bars.index[first].isoformat()}"


def run_replay(data: str | Path | Bars, **kwargs: Any) -> LoopSummary:
    """Build and run a paper replay run to the end of the data; see ``build_replay_loop``."""
    loop = build_replay_loop(data, **kwargs)
    try:
        return loop.run()
    finally:
        loop.journal.close()
