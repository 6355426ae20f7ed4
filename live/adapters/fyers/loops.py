"""Trading loops on Fyers: paper on live data, and live (real orders). Mirrors ``tradebot.live.runner.build_replay_loop``.

```python
token = load_token()                                         # tradebot fyers login wrote it
loop = build_fyers_paper_loop(["NSE:SBIN-EQ"], journal="out/fy/journal.db", policy=my_policy, token=token)
loop.run()                                                   # ticks -> bars -> policy -> PaperBroker

loop = build_fyers_live_loop(["NSE:SBIN-EQ"], journal=..., policy=..., token=token,
                             risk_config="risk.yaml", i_understand_real_money=True)
```

Both take the market data from the Fyers data socket (``FyersDataFeed``; the loop's ``BarBuilder`` turns
ticks into bars) and warm the feature streams up with ``warmup_days`` of history over REST. The paper
loop fills with ``tradebot.live.paper.PaperBroker`` (the backtester's engine) and never sends an order to Fyers:
it does not even build an order client. The live loop sends real orders through
``FyersExecutionClient`` and refuses to be built without an explicit risk config file and the
confirmation flag (the CLI's ``--broker fyers --live --risk-config FILE --i-understand-real-money``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from tradebot.features.bars import Bars
from tradebot.features.pipeline import FeaturePipeline
from tradebot.core.nse_time import IST
from tradebot.live.adapters.fyers.auth import FyersToken, install_redaction, load_token
from tradebot.live.adapters.fyers.client import FyersExecutionClient
from tradebot.live.adapters.fyers.data import FyersDataFeed, TickClock, default_socket_factory, fetch_history
from tradebot.live.adapters.fyers.ratelimit import RateLimiter
from tradebot.live.adapters.fyers.rest import Endpoints, FyersRest, make_model, state_dir
from tradebot.live.journal import Journal
from tradebot.live.loop import TradingLoop
from tradebot.live.observations import StreamFeatures
from tradebot.live.prometheus import LiveMetrics
from tradebot.live.paper import PaperBroker
from tradebot.live.ports import Clock, ExecutionClient
from tradebot.live.ledger import AccountLedger
from tradebot.live.risk import RiskConfig, load_risk_file
from tradebot.envs.fill_rules import FillRules
from tradebot.live.runner import FYERS_RATE_LIMITS, LiveConfig, default_paper_state
from tradebot.core.errors import UserInputError

LIVE_FLAGS = "--broker fyers --live --risk-config FILE --i-understand-real-money"


def _history(rest: FyersRest, symbols: Sequence[str], timeframe: str, warmup_days: int,
             now: pd.Timestamp) -> dict[str, Bars | None]:
    end = now.tz_convert(IST).date()
    start = end - timedelta(days=warmup_days)
    return {s: fetch_history(rest, s, timeframe, start, end, now_ns=int(now.value)) for s in symbols}


def _features(symbols: Sequence[str], history: Mapping[str, Bars | None], config: LiveConfig,
              timeframe: str) -> dict[str, StreamFeatures]:
    out = {}
    for s in symbols:
        h = history.get(s)
        if h is not None and len(h):
            pipeline = FeaturePipeline.for_bars(h, config.features)
        else:
            pipeline = FeaturePipeline(config.features, timeframe=timeframe, has_volume=not s.endswith("-INDEX"))
            h = None
        out[s] = StreamFeatures(pipeline, h)
    return out


def _parts(symbols: Sequence[str], *, token: FyersToken | None, timeframe: str, endpoints: Endpoints | None,
           rest: FyersRest | None, feed: FyersDataFeed | None, litemode: bool, stall_s: float, log_path: Any,
           clock: Clock | None, limiter: RateLimiter | None) -> tuple[FyersToken | None, Endpoints, FyersRest,
                                                                      FyersDataFeed]:
    if not symbols:
        raise UserInputError("give at least one symbol (--symbols NSE:SBIN-EQ,...)")
    if token is None and (rest is None or feed is None):
        token = load_token()
    if token is not None:
        install_redaction(token.secret())
    endpoints = endpoints or Endpoints.resolve(token.api_base if token is not None else None)
    log_path = log_path or state_dir() / "logs"
    if rest is None:
        rest = FyersRest(make_model(token.app_id, token.secret(), endpoints=endpoints, log_path=log_path),
                         limiter=limiter)
    if feed is None:
        feed = FyersDataFeed(default_socket_factory(token, litemode=litemode, endpoints=endpoints, log_path=log_path),
                             timeframe=timeframe, rest=rest, clock=clock, stall_s=stall_s)
    return token, endpoints, rest, feed


def build_fyers_paper_loop(symbols: Sequence[str], *, journal: str | Path, policy: Callable[[str, Any], Any],
                           config: LiveConfig | None = None, timeframe: str = "5m", token: FyersToken | None = None,
                           paper_state: str | Path | None = None, warmup_days: int = 30, litemode: bool = False,
                           stall_s: float = 30.0, endpoints: Endpoints | None = None, rest: FyersRest | None = None,
                           feed: FyersDataFeed | None = None, clock: Clock | None = None,
                           history: Mapping[str, Bars | None] | None = None, log_path: str | Path | None = None,
                           metrics: LiveMetrics | None = None, logger: logging.Logger | None = None,
                           on_stage: Callable[[str, str, int], None] | None = None) -> TradingLoop:
    """A paper loop on live Fyers data: ``FyersDataFeed`` -> ``TradingLoop`` -> ``PaperBroker`` (no order
    ever goes to Fyers). ``token``: default ``load_token()``; ``history``: warm-up bars per symbol
    (default: ``warmup_days`` fetched over REST); ``clock``: the feed's clock (``TickClock()`` to follow
    the exchange's print times, e.g. against the simulator's replay)."""
    config = config or LiveConfig()
    _, _, rest, feed = _parts(symbols, token=token, timeframe=timeframe, endpoints=endpoints, rest=rest, feed=feed,
                              litemode=litemode, stall_s=stall_s, log_path=log_path, clock=clock, limiter=None)
    if history is None:
        history = _history(rest, symbols, timeframe, warmup_days, pd.Timestamp(feed.clock.now_ns(), tz="UTC"))
    paper_state = paper_state or default_paper_state(journal)
    broker = PaperBroker(config.engine, list(symbols), paper_state, clock=feed.clock, rate_limits=FYERS_RATE_LIMITS)
    return TradingLoop(feed=feed, broker=broker, policy=policy, journal=Journal(journal, run=config.loop.run),
                       features=_features(symbols, history, config, timeframe), engine=config.engine,
                       risk=config.risk, config=config.loop, timeframe=timeframe, metrics=metrics, logger=logger,
                       on_stage=on_stage, ledger=AccountLedger(f"{paper_state}.ledger.json"))


def build_fyers_live_loop(symbols: Sequence[str], *, journal: str | Path, policy: Callable[[str, Any], Any],
                          risk_config: str | Path | RiskConfig | None = None, i_understand_real_money: bool = False,
                          config: LiveConfig | None = None, timeframe: str = "5m", token: FyersToken | None = None,
                          warmup_days: int = 30, litemode: bool = False, stall_s: float = 30.0,
                          endpoints: Endpoints | None = None, rest: FyersRest | None = None,
                          feed: FyersDataFeed | None = None, client: ExecutionClient | None = None,
                          clock: Clock | None = None, history: Mapping[str, Bars | None] | None = None,
                          log_path: str | Path | None = None, metrics: LiveMetrics | None = None,
                          logger: logging.Logger | None = None,
                          on_stage: Callable[[str, str, int], None] | None = None,
                          ledger_path: str | Path | None = None) -> TradingLoop:
    """A live loop: real orders through ``FyersExecutionClient`` (fills' costs estimated with the engine's cost
    schedule). Refuses (``UserInputError``) unless ``risk_config`` (a YAML file with only a ``risk:`` section
    that sets the money limits, see ``tradebot.live.risk.load_risk_file``, or a ``RiskConfig``) is given
    explicitly and ``i_understand_real_money`` is True. The risk config replaces ``config.risk`` (the CLI
    refuses a --config that sets limits too). The account ledger (``ledger_path``, default in the
    adapter's state folder) keeps the day's loss budget and the peak across journals."""
    if risk_config is None or not i_understand_real_money:
        missing = [n for n, ok in (("--risk-config FILE", risk_config is not None),
                                   ("--i-understand-real-money", i_understand_real_money)) if not ok]
        raise UserInputError(f"live trading with real money needs {' and '.join(missing)}: run with {LIVE_FLAGS} "
                             "(try --paper --feed fyers first: same data, paper fills)")
    risk = risk_config if isinstance(risk_config, RiskConfig) else load_risk_file(risk_config)
    config = (config or LiveConfig()).model_copy(update={"risk": risk})
    token, endpoints, rest, feed = _parts(symbols, token=token, timeframe=timeframe, endpoints=endpoints, rest=rest,
                                          feed=feed, litemode=litemode, stall_s=stall_s, log_path=log_path,
                                          clock=clock, limiter=None)
    if client is None:
        if token is None:
            raise UserInputError("the live loop needs a Fyers token (tradebot fyers login)")
        client = FyersExecutionClient.from_token(token, endpoints=endpoints, log_path=log_path or state_dir() / "logs",
                                                 clock=feed.clock, timeframe=timeframe,
                                                 order_cost=FillRules(config.engine).order_cost)
    if isinstance(client, FyersExecutionClient) and feed.on_tick is None:
        feed.on_tick = lambda t: client.mark(t.symbol, t.price)  # equity marked at the last print
    if history is None:
        history = _history(rest, symbols, timeframe, warmup_days, pd.Timestamp(feed.clock.now_ns(), tz="UTC"))
    return TradingLoop(feed=feed, broker=client, policy=policy, journal=Journal(journal, run=config.loop.run),
                       features=_features(symbols, history, config, timeframe), engine=config.engine,
                       risk=config.risk, config=config.loop, timeframe=timeframe, metrics=metrics, logger=logger,
                       on_stage=on_stage, ledger=AccountLedger(ledger_path or state_dir() / "ledger.json"))


__all__ = ["build_fyers_paper_loop", "build_fyers_live_loop", "LIVE_FLAGS", "TickClock"]
