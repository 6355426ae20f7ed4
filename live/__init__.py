"""Live and paper trading: feed -> bars -> features -> policy -> risk engine -> execution client.

Public API (imported lazily, so ``tradebot live status`` does not load the engine):

* ports (``tradebot.live.ports``): ``Bar``, ``Tick``, ``Heartbeat``, ``OrderRequest``, ``OrderUpdate``, ``Fill``,
  ``PositionReport``, ``AccountReport``, ``RiskDecision``, ``RiskEvent``, enums ``Side``, ``OrderStatus``,
  ``Intent``, ``RiskState``, ``Verdict``; interfaces ``DataFeed``, ``ExecutionClient``; ``SimClock``,
  ``WallClock``; ``client_order_id``.
* ``BarBuilder`` (ticks -> session-aligned bars), ``ReplayFeed`` (a bar file as a live feed), ``QueueFeed``
  (the thread-based base of real-time feeds).
* ``PaperBroker``: the execution client that fills through ``tradebot.envs.engine``.
* ``RiskConfig``, ``RiskEngine``, ``RateLimiter``.
* ``Journal``, ``request_control``, ``journal_status``.
* ``TradingLoop``, ``LoopConfig``, ``current_bar``; its parts: ``OrderManager`` (order state, submit once,
  cancel), ``tradebot.live.reconcile`` (start-up reconciliation, pure functions), ``StreamFeatures`` /
  ``Observations`` (what the policy sees); ``ScheduledPolicy``, ``baseline_policy``, ``ModelPolicy``.
* ``LiveMetrics``, ``serve_metrics``; ``configure_json_logging``.
* ``LiveConfig``, ``build_replay_loop``, ``run_replay``; ``run_paper_replay``, ``run_on_fyers``,
  ``RunOutcome`` (what ``tradebot live`` runs: monitoring, Serve, the loop, the run's files and parity).

Broker adapters live in ``live/adapters/<broker>/`` and are the only code that imports a broker SDK.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    **{name: "tradebot.live.ports" for name in (
        "Bar", "Tick", "Heartbeat", "OrderRequest", "OrderUpdate", "Fill", "PositionReport", "AccountReport",
        "RiskDecision", "RiskEvent", "Side", "OrderStatus", "Intent", "RiskState", "Verdict", "DataFeed",
        "ExecutionClient", "SimClock", "WallClock", "client_order_id")},
    "BarBuilder": "tradebot.live.bar_builder",
    "ReplayFeed": "tradebot.live.feeds",
    "QueueFeed": "tradebot.live.feeds",
    "PaperBroker": "tradebot.live.paper",
    "RiskConfig": "tradebot.live.risk",
    "RiskEngine": "tradebot.live.risk",
    "RateLimiter": "tradebot.live.risk",
    "Journal": "tradebot.live.journal",
    "request_control": "tradebot.live.journal",
    "journal_status": "tradebot.live.journal",
    "TradingLoop": "tradebot.live.loop",
    "LoopConfig": "tradebot.live.loop",
    "StreamFeatures": "tradebot.live.observations",
    "Observations": "tradebot.live.observations",
    "OrderManager": "tradebot.live.orders",
    "current_bar": "tradebot.live.loop",
    "ScheduledPolicy": "tradebot.live.policies",
    "baseline_policy": "tradebot.live.policies",
    "ModelPolicy": "tradebot.live.policies",
    "LiveMetrics": "tradebot.live.prometheus",
    "serve_metrics": "tradebot.live.prometheus",
    "configure_json_logging": "tradebot.live.logs",
    "LiveConfig": "tradebot.live.runner",
    "build_replay_loop": "tradebot.live.runner",
    "run_replay": "tradebot.live.runner",
    "RunOutcome": "tradebot.live.launch",
    "run_paper_replay": "tradebot.live.launch",
    "run_on_fyers": "tradebot.live.launch",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tradebot.live' has no attribute {name!r}")
