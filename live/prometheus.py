"""Prometheus metrics of the live loop, on a registry of their own (one per loop, so tests and several
loops in one process do not collide). Names are constants: dashboards and alerts use these.

``serve_metrics(metrics, port)`` exposes them over HTTP at ``/metrics`` (prometheus_client's server,
a daemon thread).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, generate_latest

from tradebot.live.ports import RiskState

EQUITY = "tradebot_live_equity_rupees"
DAY_PNL = "tradebot_live_day_pnl_rupees"
REALIZED_PNL = "tradebot_live_realized_pnl_rupees"
DRAWDOWN = "tradebot_live_drawdown_ratio"
POSITION = "tradebot_live_position_units"
ORDERS = "tradebot_live_orders"  # counter: _total suffix added by prometheus_client
FILLS = "tradebot_live_fills"
REJECTIONS = "tradebot_live_rejections"
RISK_STATE = "tradebot_live_risk_state"
BAR_TO_ORDER = "tradebot_live_bar_to_order_seconds"
INFERENCE = "tradebot_live_inference_seconds"
STALENESS = "tradebot_live_data_staleness_seconds"
ACTIONS = "tradebot_live_actions"
BARS = "tradebot_live_bars"
DRIFT_STATE = "tradebot_live_drift_state"  # 1 for the state each (symbol, monitor) is in, 0 for the others
DRIFT_STATISTIC = "tradebot_live_drift_statistic"
DRIFT_STATES = ("OK", "WARN", "ALARM")
GATE_WEIGHT = "tradebot_live_gate_weight"  # a mixture of experts: the gate's weight per (symbol, expert)
EXPERT_CHOSEN = "tradebot_live_expert_chosen"  # counter: decisions per (symbol, chosen expert)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class LiveMetrics:
    """The loop's metrics: equity and P&L, positions, orders, fills, rejections, risk state, latencies,
    data staleness, the distribution of actions (as the policy proposed them and as they went out) and,
    for a mixture of experts, the gate's weights and the chosen expert of each decision."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.equity = Gauge(EQUITY, "Account equity marked at the last bar close", registry=r)
        self.day_pnl = Gauge(DAY_PNL, "Equity change since the session start", registry=r)
        self.realized_pnl = Gauge(REALIZED_PNL, "Realized P&L of closed trades, net of costs", registry=r)
        self.drawdown = Gauge(DRAWDOWN, "1 - equity / peak equity", registry=r)
        self.position = Gauge(POSITION, "Signed position per symbol", ["symbol"], registry=r)
        self.orders = Counter(ORDERS, "Orders by status change (submitted, accepted, filled, ...)", ["status"], registry=r)
        self.fills = Counter(FILLS, "Fills by kind (entry, signal, stop, take_profit, square_off, ...)",
                             ["symbol", "kind"], registry=r)
        self.rejections = Counter(REJECTIONS, "Orders refused, by whom (risk, broker) and why", ["source", "reason"],
                                  registry=r)
        self.risk_state = Enum(RISK_STATE, "Risk engine state", states=[s.value for s in RiskState], registry=r)
        self.bar_to_order = Histogram(BAR_TO_ORDER, "Wall time from a bar's arrival to its order's acknowledgement",
                                      buckets=_LATENCY_BUCKETS, registry=r)
        self.inference = Histogram(INFERENCE, "Wall time of one policy call", buckets=_LATENCY_BUCKETS, registry=r)
        self.staleness = Gauge(STALENESS, "Seconds since the last bar ended", ["symbol"], registry=r)
        self.actions = Counter(ACTIONS, "Actions by stage (policy = proposed, final = sent)", ["symbol", "stage", "action"],
                               registry=r)
        self.bars = Counter(BARS, "Bars processed", ["symbol"], registry=r)
        self.drift_state = Gauge(DRIFT_STATE, "Drift monitor state (1 = the monitor is in this state)",
                                 ["symbol", "monitor", "state"], registry=r)
        self.drift_statistic = Gauge(DRIFT_STATISTIC, "Drift monitor statistic (see tradebot.rl.drift)",
                                     ["symbol", "monitor"], registry=r)
        self.gate_weight = Gauge(GATE_WEIGHT, "Mixture of experts: the gate's weight of each expert at the last "
                                 "decision", ["symbol", "expert"], registry=r)
        self.expert_chosen = Counter(EXPERT_CHOSEN, "Mixture of experts: decisions by chosen expert",
                                     ["symbol", "expert"], registry=r)
        self.risk_state.state(RiskState.ACTIVE.value)

    def observe_gate(self, symbol: str, gate: Mapping[str, Any]) -> None:
        """Publish one decision's gate (``GateDecision.as_dict()``: ``expert``, ``weights`` per expert)."""
        for expert, weight in gate["weights"].items():
            self.gate_weight.labels(symbol, expert).set(float(weight))
        self.expert_chosen.labels(symbol, str(gate["expert"])).inc()

    def observe_drift(self, symbol: str, snapshot: dict) -> None:
        """Publish one symbol's drift monitors (``DriftMonitors.snapshot()``)."""
        for monitor, snap in snapshot.items():
            for state in DRIFT_STATES:
                self.drift_state.labels(symbol, monitor, state).set(1.0 if snap["state"] == state else 0.0)
            self.drift_statistic.labels(symbol, monitor).set(float(snap["value"]))

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """One sample's current value (tests, status)."""
        return self.registry.get_sample_value(name, labels or {})


def serve_metrics(metrics: LiveMetrics, port: int, addr: str = "127.0.0.1"):
    """Serve ``/metrics`` on ``addr:port`` (0: any free port); returns the server (``server_port``,
    ``shutdown()``)."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=addr, registry=metrics.registry)
    return server
