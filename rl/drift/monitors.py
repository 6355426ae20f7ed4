"""Streaming drift monitors: market features, actions and trade performance against the model's
reference, each in state OK, WARN or ALARM (settings and how each statistic is defined:
``tradebot.rl.drift.drift_config``).

```python
monitors = DriftMonitors(DriftReference.load(model_dir), DriftConfig())
changes = monitors.on_bar(ts, feature_row, action)      # once per decided bar
changes += monitors.on_trade(ts, net_return)            # once per closed trade
monitors.states                                         # {"features": OK, "actions": WARN, ...}
```

Each call returns the state changes it caused (``Transition``); a monitor's state is re-evaluated on
every update once it has seen enough data, so it can go back to OK when the evidence fades. The
change detectors are river's ADWIN (an adaptive window that drops data from before a detected
change); the divergences and tests come from scipy.
"""

from __future__ import annotations

import base64
import math
import pickle
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
from river.drift import ADWIN
from scipy.spatial.distance import jensenshannon
from scipy.stats import binomtest

from tradebot.rl.drift.drift_config import (
    ActionDriftConfig,
    DriftConfig,
    FeatureDriftConfig,
    PerformanceDriftConfig,
)
from tradebot.rl.drift.reference import N_ACTIONS, DriftReference

STATE_FORMAT = "tradebot.drift.monitors/1"
HYSTERESIS = 0.1  # leaving a state takes the statistic 10 % of the threshold back past it
MIN_DISTINCT_PERCENTILES = 20  # a feature is monitored when its 101 training percentiles take this many values


class MonitorState(str, Enum):
    OK = "OK"
    WARN = "WARN"
    ALARM = "ALARM"

    @property
    def level(self) -> int:
        return ("OK", "WARN", "ALARM").index(self.value)


def worst(states) -> MonitorState:
    return max(states, key=lambda s: s.level, default=MonitorState.OK)


@dataclass(frozen=True)
class Transition:
    """A monitor moved from ``old`` to ``new`` at ``ts`` (epoch ns) with its statistic at ``value``."""

    monitor: str
    ts: int
    old: MonitorState
    new: MonitorState
    value: float
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"monitor": self.monitor, "ts": self.ts, "old": self.old.value, "new": self.new.value,
                "value": self.value, "detail": dict(self.detail)}


class _Monitor:
    name = ""

    def __init__(self) -> None:
        self.state = MonitorState.OK
        self.value = 0.0
        self.updates = 0
        self.detail: dict[str, Any] = {}

    def _graded(self, value: float, warn: float, alarm: float, higher_is_worse: bool = True) -> MonitorState:
        """The state for ``value``; leaving WARN or ALARM takes the statistic ``HYSTERESIS`` (a fraction of
        the threshold) back past it, so a statistic hovering at a threshold does not flap."""
        sign = 1.0 if higher_is_worse else -1.0
        v, w, a = sign * value, sign * warn, sign * alarm
        held = self.state
        if v >= a or (held is MonitorState.ALARM and v >= a - HYSTERESIS * abs(a)):
            return MonitorState.ALARM
        if v >= w or (held is not MonitorState.OK and v >= w - HYSTERESIS * abs(w)):
            return MonitorState.WARN
        return MonitorState.OK

    def _set(self, ts: int, new: MonitorState) -> list[Transition]:
        if new is self.state:
            return []
        change = Transition(self.name, int(ts), self.state, new, float(self.value), dict(self.detail))
        self.state = new
        return [change]


class FeatureDrift(_Monitor):
    """The market features against their training percentiles (see ``FeatureDriftConfig``)."""

    name = "features"

    def __init__(self, reference: DriftReference, config: FeatureDriftConfig):
        super().__init__()
        self.config = config
        self.names = reference.feature_names
        self._q = reference.quantiles
        n = self._q.shape[1]
        self._levels = float(n)
        # the reference's own mean of (2u - 1)^2 per feature (1/3 for a continuous one); features with
        # few distinct values (candle patterns, weekdays) give a heavy-tailed score and are left out
        self._scale = self._score_means(reference)
        distinct = np.array([len(np.unique(row)) for row in self._q])
        self._used = (self._scale > 1e-12) & (distinct >= MIN_DISTINCT_PERCENTILES)
        self.monitored = tuple(n for n, used in zip(self.names, self._used) if used)
        self._adwin = ADWIN(delta=config.delta)
        self._recent = np.ones(len(self.names))  # per-feature score, exponentially weighted (for the detail)

    def _percentile(self, x: np.ndarray) -> np.ndarray:
        below = (self._q < x[:, None]).sum(axis=1)
        equal = (self._q == x[:, None]).sum(axis=1)
        return (below + 0.5 * equal) / self._levels

    def _score_means(self, reference: DriftReference) -> np.ndarray:
        # the reference keeps percentiles, not rows: the mean of (2u - 1)^2 over the percentile grid
        # itself is the training distribution's (each percentile stands for 1 % of the rows)
        grid = reference.quantiles
        means = np.zeros(grid.shape[0])
        for j in range(grid.shape[0]):
            u = self._percentile_of(grid[j], grid[j])
            means[j] = float(np.mean((2.0 * u - 1.0) ** 2))
        return means

    def _percentile_of(self, q: np.ndarray, x: np.ndarray) -> np.ndarray:
        below = (q[None, :] < x[:, None]).sum(axis=1)
        equal = (q[None, :] == x[:, None]).sum(axis=1)
        return (below + 0.5 * equal) / float(len(q))

    def update(self, ts: int, features: np.ndarray) -> list[Transition]:
        x = np.asarray(features, dtype=np.float64)
        if x.shape != (len(self.names),) or not np.all(np.isfinite(x)):
            return []  # warm-up rows (NaN) say nothing about drift
        u = self._percentile(x)
        per_feature = np.where(self._used, (2.0 * u - 1.0) ** 2 / np.where(self._used, self._scale, 1.0), 1.0)
        self._recent += 0.02 * (per_feature - self._recent)
        self._adwin.update(float(per_feature[self._used].mean()) if self._used.any() else 1.0)
        self.updates += 1
        if self._adwin.width < self.config.min_bars:
            return []
        self.value = abs(float(self._adwin.estimation) - 1.0)
        top = np.argsort(-np.where(self._used, np.abs(self._recent - 1.0), -1.0))[:3]
        self.detail = {"window_bars": int(self._adwin.width), "window_score": float(self._adwin.estimation),
                       "top_features": [self.names[i] for i in top]}
        return self._set(ts, self._graded(self.value, self.config.warn, self.config.alarm))


class ActionDrift(_Monitor):
    """The policy's action frequencies over its last ``window`` decisions against the reference's (see
    ``ActionDriftConfig``)."""

    name = "actions"

    def __init__(self, reference: DriftReference, config: ActionDriftConfig):
        super().__init__()
        self.config = config
        self._ref = np.asarray(reference.action_probs, dtype=np.float64)
        self._recent: deque[int] = deque(maxlen=config.window)
        self._counts = np.zeros(N_ACTIONS)

    def update(self, ts: int, action: int) -> list[Transition]:
        a = int(action)
        if not 0 <= a < N_ACTIONS:
            return []
        if len(self._recent) == self._recent.maxlen:
            self._counts[self._recent[0]] -= 1.0
        self._recent.append(a)
        self._counts[a] += 1.0
        self.updates += 1
        if len(self._recent) < self.config.min_decisions:
            return []
        p = self._counts / self._counts.sum()
        self.value = float(jensenshannon(p, self._ref, base=2))
        self.detail = {"window_decisions": len(self._recent), "frequencies": [round(float(v), 4) for v in p],
                       "reference": [round(float(v), 4) for v in self._ref]}
        return self._set(ts, self._graded(self.value, self.config.warn, self.config.alarm))


class PerformanceDrift(_Monitor):
    """Closed trades against the validation reference (see ``PerformanceDriftConfig``)."""

    name = "performance"

    def __init__(self, reference: DriftReference, config: PerformanceDriftConfig):
        super().__init__()
        self.config = config
        self._mean, self._std, self._hit = reference.trade_mean, reference.trade_std, reference.hit_rate
        self.usable = reference.trades >= 2 and reference.trade_std > 0
        self._returns = ADWIN(delta=config.delta)
        self._wins = ADWIN(delta=config.delta)

    def update(self, ts: int, net_return: float) -> list[Transition]:
        r = float(net_return)
        if not self.usable or not math.isfinite(r):
            return []
        self._returns.update(r)
        self._wins.update(1.0 if r > 0 else 0.0)
        self.updates += 1
        c = self.config
        n_r, n_w = int(self._returns.width), int(self._wins.width)
        if self.updates < c.min_trades or min(n_r, n_w) < c.min_trades:
            return []
        z = (float(self._returns.estimation) - self._mean) / (self._std / math.sqrt(n_r))
        wins = int(round(float(self._wins.estimation) * n_w))
        p = float(binomtest(wins, n_w, min(max(self._hit, 1e-9), 1 - 1e-9), alternative="less").pvalue)
        self.value = z
        self.detail = {"window_trades": n_r, "mean_return": float(self._returns.estimation), "z": z,
                       "hit_rate": wins / n_w, "hit_rate_p": p, "reference_mean": self._mean,
                       "reference_hit_rate": self._hit}
        z_state = self._graded(z, c.z_warn, c.z_alarm, higher_is_worse=False)
        p_state = self._graded(-math.log10(max(p, 1e-300)), -math.log10(c.p_warn), -math.log10(c.p_alarm))
        return self._set(ts, worst((z_state, p_state)))


class DriftMonitors:
    """The three monitors of one model (those the config enables)."""

    def __init__(self, reference: DriftReference, config: DriftConfig | None = None):
        self.reference = reference
        self.config = config or DriftConfig()
        c = self.config
        self.features = FeatureDrift(reference, c.features) if c.features.enabled else None
        self.actions = ActionDrift(reference, c.actions) if c.actions.enabled else None
        self.performance = PerformanceDrift(reference, c.performance) if c.performance.enabled else None

    @property
    def monitors(self) -> list[_Monitor]:
        return [m for m in (self.features, self.actions, self.performance) if m is not None]

    def on_bar(self, ts: int, features: np.ndarray, action: int | None) -> list[Transition]:
        """One decided bar: its market feature row and the action the policy chose (None: no decision)."""
        out: list[Transition] = []
        if self.features is not None:
            out += self.features.update(ts, features)
        if self.actions is not None and action is not None:
            out += self.actions.update(ts, action)
        return out

    def on_trade(self, ts: int, net_return: float) -> list[Transition]:
        """One closed trade's net return (net P&L over entry notional)."""
        return self.performance.update(ts, net_return) if self.performance is not None else []

    @property
    def states(self) -> dict[str, MonitorState]:
        return {m.name: m.state for m in self.monitors}

    @property
    def overall(self) -> MonitorState:
        return worst(self.states.values())

    def snapshot(self) -> dict[str, Any]:
        """Each monitor's state, statistic and detail (for status screens and JSON)."""
        return {m.name: {"state": m.state.value, "value": m.value, "updates": m.updates, "detail": dict(m.detail)}
                for m in self.monitors}

    def state_dict(self) -> dict[str, Any]:
        """The monitors' full state, JSON-ready (river's detectors are pickled), to resume after a restart."""
        return {"format": STATE_FORMAT, "monitors": base64.b64encode(pickle.dumps(self.monitors)).decode("ascii")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a drift monitor state (format {state.get('format')!r})")
        restored = pickle.loads(base64.b64decode(state["monitors"]))  # noqa: S301  (our own journal's bytes)
        by_name = {m.name: m for m in restored}
        self.features = by_name.get("features")
        self.actions = by_name.get("actions")
        self.performance = by_name.get("performance")
