"""The model's drift monitors inside a live run (``tradebot.rl.drift``), and what their states do.

Per symbol, one ``DriftMonitors`` against the model's reference (saved with the model by ``tradebot
train``): fed each decided bar (the market feature row and the action the policy proposed, after the
feature warm-up) and each closed trade (net P&L over the entry notional). Every state change becomes a
risk event of kind ``drift`` in the journal (and the JSON log, and Prometheus). What a state does is
configuration (``DriftConfig``, YAML section ``drift`` of the live config):

* ALARM: ``on_alarm: reduce`` puts the risk engine in REDUCING (exits only), ``halt`` in HALTED
  (flatten, no orders), ``none`` only records it. The condition stays until ``tradebot live resume``:
  a model that drifted is not trusted again on its own.
* WARN: ``on_warn: retrain_request`` journals a retraining request (a risk event of kind
  ``retrain_request``, once per monitor and symbol until it goes back to OK).

The monitors' state is saved in the journal with the risk state, so a restart carries on where it was.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tradebot.live.ports import RiskEvent, RiskState
from tradebot.rl.drift import DriftConfig, DriftMonitors, DriftReference, MonitorState, Transition

DRIFT_CONDITION = "drift"  # the risk engine's condition name (resumable by the operator)
STATE_KEY = "drift"  # the journal's state entry


class DriftWatch:
    """Drift monitors of one model over the run's symbols (see the module docstring)."""

    def __init__(self, reference: DriftReference, config: DriftConfig | None = None, symbols: tuple[str, ...] = ()):
        self.reference = reference
        self.config = config or DriftConfig()
        self.monitors: dict[str, DriftMonitors] = {s: DriftMonitors(reference, self.config) for s in symbols}
        self._requested: set[tuple[str, str]] = set()  # (symbol, monitor) with a retraining request open

    def _for(self, symbol: str) -> DriftMonitors:
        if symbol not in self.monitors:
            self.monitors[symbol] = DriftMonitors(self.reference, self.config)
        return self.monitors[symbol]

    def on_decision(self, symbol: str, ts: int, features: np.ndarray, action: int | None, now: int,
                    risk) -> list[RiskEvent]:
        """One decided bar: its market features and the proposed action (None: no policy decision)."""
        return self._react(symbol, self._for(symbol).on_bar(ts, features, action), now, risk)

    def on_trade(self, symbol: str, ts: int, realized_pnl: float, entry_notional: float, now: int,
                 risk) -> list[RiskEvent]:
        """One closed trade (its exit fill's net P&L, and what the position cost to enter)."""
        if not (math.isfinite(realized_pnl) and entry_notional > 0):
            return []
        return self._react(symbol, self._for(symbol).on_trade(ts, realized_pnl / entry_notional), now, risk)

    def _react(self, symbol: str, changes: list[Transition], now: int, risk) -> list[RiskEvent]:
        events: list[RiskEvent] = []
        for t in changes:
            events.append(RiskEvent(ts=now, kind="drift", reason=f"{t.monitor} drift {t.old.value} -> {t.new.value} "
                                    f"(statistic {t.value:.4g})", state=risk.state, symbol=symbol,
                                    details={"monitor": t.monitor, "from": t.old.value, "to": t.new.value,
                                             "value": t.value, "bar": t.ts, **_short(t.detail)},
                                    key=f"drift:{symbol}:{t.monitor}:{t.new.value}:{t.ts}"))
            if t.new is MonitorState.ALARM and self.config.on_alarm != "none":
                state = RiskState.HALTED if self.config.on_alarm == "halt" else RiskState.REDUCING
                events += risk.set_condition(DRIFT_CONDITION, state, f"drift ALARM: {t.monitor} on {symbol} "
                                             f"(statistic {t.value:.4g}); `tradebot live resume` after review",
                                             now, kind="drift", symbol=symbol)
            if t.new is MonitorState.WARN and self.config.on_warn == "retrain_request":
                if (symbol, t.monitor) not in self._requested:
                    self._requested.add((symbol, t.monitor))
                    events.append(RiskEvent(ts=now, kind="retrain_request", reason=f"{t.monitor} drift WARN on "
                                            f"{symbol}: retraining requested (tradebot retrain)", state=risk.state,
                                            symbol=symbol, details={"monitor": t.monitor, "value": t.value},
                                            key=f"retrain_request:{symbol}:{t.monitor}:{t.ts}"))
            if t.new is MonitorState.OK:
                self._requested.discard((symbol, t.monitor))
        return events

    def snapshot(self) -> dict[str, Any]:
        """Per symbol, each monitor's state, statistic and detail (status screens, JSON)."""
        return {s: m.snapshot() for s, m in self.monitors.items()}

    def states(self) -> dict[tuple[str, str], MonitorState]:
        return {(s, name): state for s, m in self.monitors.items() for name, state in m.states.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"monitors": {s: m.state_dict() for s, m in self.monitors.items()},
                "requested": sorted([list(k) for k in self._requested]), "snapshot": self.snapshot()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for symbol, saved in state.get("monitors", {}).items():
            self._for(symbol).load_state_dict(saved)
        self._requested = {(s, m) for s, m in state.get("requested", [])}


def _short(detail: dict[str, Any]) -> dict[str, Any]:
    """A detail small enough for a journal row."""
    return {k: v for k, v in detail.items() if not isinstance(v, (list, dict)) or len(v) <= 5}
