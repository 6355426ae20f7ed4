"""Shared pieces of the live tests: small feature configs, a given-ATR feature source, bar builders."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tradebot.envs.engine import EngineConfig
from tradebot.features.bars import Bars, load_bars
from tradebot.features.pipeline import FeatureConfig
from tradebot.live.feeds import ReplayFeed
from tradebot.live.journal import Journal
from tradebot.live.loop import LoopConfig, TradingLoop
from tradebot.live.paper import PaperBroker
from tradebot.live.policies import ScheduledPolicy
from tradebot.live.ports import Bar
from tradebot.live.risk import RiskConfig

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_5M = str(ROOT / "data" / "sample" / "NSE_NIFTY50-INDEX_5m.csv.gz")
SAMPLE_1M = str(ROOT / "data" / "sample" / "NSE_NIFTY50-INDEX_1m.csv.gz")
SYMBOL = "NSE:NIFTY50-INDEX"

# A cheap feature set (one return, no normalisation): the loop tests are about the plumbing.
MINIMAL_FEATURES = FeatureConfig.model_validate({
    "returns": {"horizons": [1]}, "trend": {"enabled": False}, "momentum": {"enabled": False},
    "volatility": {"enabled": False}, "volume": {"enabled": False}, "regime": {"enabled": False},
    "calendar": {"enabled": False}, "candles": {"enabled": False}, "normalisation": {"method": "none"}})

# Risk limits that never bind: the paper fills must then be exactly the backtester's.
LOOSE_RISK = RiskConfig(max_position=10**9, max_notional=1e15, max_daily_loss=0.99, max_drawdown=0.99,
                        square_off=None)


@functools.lru_cache(maxsize=4)
def sample_bars(path: str = SAMPLE_5M) -> Bars:
    return load_bars(path)


def sample_csv(folder: Path, start: str, end: str) -> Path:
    """The 5-minute sample's bars in ``[start, end)`` as a CSV named for its symbol (as a user's file)."""
    frame = sample_bars().between(start, end).frame.reset_index()
    frame["timestamp"] = frame["timestamp"].map(lambda t: t.isoformat())
    path = Path(folder) / "NSE_NIFTY50-INDEX_5m.csv"
    frame.to_csv(path, index=False)
    return path


class GivenFeatures:
    """A feature source with no features and a given ATR per bar (by bar start): fast, and the ATR is
    exactly the array a backtest is given."""

    feature_names: tuple[str, ...] = ()

    def __init__(self, atr: Mapping[int, float]):
        self._atr = dict(atr)
        self.atr = float("nan")
        self.ready = True
        self.last_ts: int | None = None

    @classmethod
    def for_bars(cls, bars: Bars, atr: np.ndarray) -> "GivenFeatures":
        return cls(dict(zip(bars.index.as_unit("ns").asi8.tolist(), np.asarray(atr, dtype=float).tolist())))

    def update(self, bar: Bar) -> np.ndarray:
        self.atr = self._atr.get(bar.ts, float("nan"))
        self.last_ts = bar.ts
        return np.zeros(0)

    def state_dict(self) -> dict[str, Any]:
        return {"atr": self.atr, "last_ts": self.last_ts}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.atr, self.last_ts = state["atr"], state["last_ts"]


def make_bars(symbol: str, start: str, opens: Sequence[float], highs: Sequence[float], lows: Sequence[float],
              closes: Sequence[float], timeframe: str = "5m", sessions: int = 1) -> Bars:
    """Intraday bars from 09:15 IST of ``start``, ``len(opens) // sessions`` per session, on consecutive days."""
    n = len(opens)
    per = n // sessions
    minutes = int(timeframe[:-1])
    stamps = []
    day = pd.Timestamp(start, tz="Asia/Kolkata")
    for k in range(n):
        d = day + pd.Timedelta(days=k // per)
        stamps.append(d + pd.Timedelta(minutes=9 * 60 + 15 + minutes * (k % per)))
    frame = pd.DataFrame({"open": opens, "high": highs, "low": lows, "close": closes, "volume": 0.0},
                         index=pd.DatetimeIndex(stamps, name="timestamp"))
    return Bars.from_frame(frame, symbol=symbol, timeframe=timeframe)


def replay_loop(bars: Bars | Mapping[str, Bars], actions: Mapping[str, np.ndarray] | np.ndarray,
                atr: Mapping[str, np.ndarray] | np.ndarray, *, engine: EngineConfig | None = None,
                risk: RiskConfig | None = None, journal: Journal | None = None, loop: LoopConfig | None = None,
                broker_path: str | None = None, rate_limits: tuple[int, int] | None = (10, 200),
                **kwargs: Any) -> TradingLoop:
    """A paper loop over ``bars`` with a scheduled policy and given ATRs (in-memory journal by default)."""
    engine = engine or EngineConfig()
    series = {bars.symbol: bars} if isinstance(bars, Bars) else dict(bars)
    if not isinstance(actions, Mapping):
        actions = {next(iter(series)): actions}
    if not isinstance(atr, Mapping):
        atr = {next(iter(series)): atr}
    schedule = {}
    for sym, b in series.items():
        schedule[sym] = dict(zip(b.index.as_unit("ns").asi8.tolist(), np.asarray(actions[sym]).astype(int).tolist()))
    feed = ReplayFeed(series)
    broker = PaperBroker(engine, list(series), broker_path, clock=feed.clock, rate_limits=rate_limits)
    return TradingLoop(feed=feed, broker=broker, policy=ScheduledPolicy(schedule), journal=journal or Journal(),
                       features={s: GivenFeatures.for_bars(b, atr[s]) for s, b in series.items()}, engine=engine,
                       risk=risk or LOOSE_RISK, config=loop or LoopConfig(), timeframe=next(iter(series.values())).timeframe,
                       **kwargs)
