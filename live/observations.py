"""What the policy sees at a live bar: per-symbol feature sources, and the env's observation built from them.

```python
features = {symbol: StreamFeatures(pipeline, history)}     # the project's incremental feature stream
observations = Observations(engine, features)
row = features[symbol].update(bar)                          # the bar's features; .atr is its raw ATR
obs = observations.at(symbol, row, bar, features[symbol].atr, position)
```

The observation is the env's (``tradebot.envs.trading_env.observation_at``): the features, then ``side,
upnl_atr, bars_in_trade, time_left`` and the action mask, computed by the engine's own per-bar kernel
(``tradebot.envs.market_data.market_row``). ``bars_in_trade`` counts the bars seen since the position's
opening bar, so ``Observations`` keeps each symbol's bar times.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Any, Protocol

import numpy as np

from tradebot.envs.engine import EngineConfig
from tradebot.envs.trading_env import observation_at
from tradebot.features.bars import Bars
from tradebot.features.pipeline import FeaturePipeline, FeatureStream
from tradebot.envs.market_data import market_row
from tradebot.live.ports import Bar, PositionReport


class FeatureSource(Protocol):
    """Per-symbol features for the policy: ``update(bar)`` returns the row; ``atr`` is the bar's raw ATR."""

    feature_names: tuple[str, ...]
    atr: float
    ready: bool
    last_ts: int | None

    def update(self, bar: Bar) -> np.ndarray: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class StreamFeatures:
    """The project's incremental ``FeatureStream`` as a ``FeatureSource`` (optionally primed with history)."""

    def __init__(self, pipeline: FeaturePipeline, history: Bars | None = None):
        self.pipeline = pipeline
        self.stream: FeatureStream = pipeline.stream(history=history)
        self.feature_names = pipeline.feature_names
        self.last_ts: int | None = int(history.index[-1].value) if history is not None and len(history) else None

    @property
    def atr(self) -> float:
        return self.stream.atr

    @property
    def ready(self) -> bool:
        return self.stream.ready

    def update(self, bar: Bar) -> np.ndarray:
        row = self.stream.update(bar.ts, bar.open, bar.high, bar.low, bar.close, bar.volume)
        self.last_ts = bar.ts
        return row

    def state_dict(self) -> dict[str, Any]:
        return {"stream": self.stream.state_dict(), "last_ts": self.last_ts}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state["stream"])
        self.last_ts = state["last_ts"]


class Observations:
    """The env's observation at a live bar, per symbol; see the module docstring."""

    def __init__(self, engine: EngineConfig, symbols: Iterable[str]):
        self.engine = engine
        self._bar_times: dict[str, list[int]] = {s: [] for s in symbols}

    def restore(self, symbol: str, bar_times: Iterable[int]) -> None:
        """The start times of the bars already processed (from the journal, after a restart)."""
        self._bar_times[symbol] = list(bar_times)

    def add_bar(self, symbol: str, ts: int) -> None:
        times = self._bar_times[symbol]
        if not times or times[-1] < ts:
            times.append(ts)

    def at(self, symbol: str, features: np.ndarray, bar: Bar, atr: float,
           position: PositionReport | None) -> np.ndarray:
        data = market_row(bar, atr, self.engine)
        shorts = self.engine.shorts_allowed  # the action mask's SELL_SHORT follows the engine orders go to
        if position is None or position.qty == 0.0:
            return observation_at(features, data, allow_short=shorts)
        times = self._bar_times[symbol]
        held = bisect.bisect_right(times, bar.ts) - bisect.bisect_right(times, position.opened_ts)
        return observation_at(features, data, position.qty, position.avg_price, held, allow_short=shorts)


__all__ = ["FeatureSource", "Observations", "StreamFeatures"]
