"""Live and paper trading: feed -> bars -> features -> policy -> risk engine -> execution client.

Public API (imported lazily, so ``tradebot live status`` does not load the engine):

* ports (``live.ports``): ``Bar``, ``Tick``, ``Heartbeat``, ``OrderRequest``, ``OrderUpdate``, ``Fill``,
  ``PositionReport``, ``AccountReport``, ``RiskDecision``, ``RiskEvent``, enums ``Side``, ``OrderStatus``,
  ``Intent``, ``RiskState``, ``Verdict``; interfaces ``DataFeed``, ``ExecutionClient``; ``SimClock``,
  ``WallClock``; ``client_order_id``.
* ``BarBuilder`` (ticks -> session-aligned bars), ``ReplayFeed`` (a bar file as a live feed), ``QueueFeed``
  (the thread-based base of real-time feeds).
* ``PaperBroker``: the execution client that fills through ``envs.engine``.
* ``RiskConfig``, ``RiskEngine``, ``RateLimiter``.
* ``Journal``, ``request_control``, ``journal_status``.
* ``TradingLoop``, ``LoopConfig``, ``StreamFeatures``, ``current_bar``; ``ScheduledPolicy``, ``baseline_policy``.
* ``LiveMetrics``, ``serve_metrics``; ``configure_json_logging``.
* ``LiveConfig``, ``build_replay_loop``, ``run_replay_session``.

Broker adapters live in ``live/adapters/<broker>/`` and are the only code that imports a broker SDK.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    **{name: "live.ports" for name in (
        "Bar", "Tick", "Heartbeat", "OrderRequest", "OrderUpdate", "Fill", "PositionReport", "AccountReport",
        "RiskDecision", "RiskEvent", "Side", "OrderStatus", "Intent", "RiskState", "Verdict", "DataFeed",
        "ExecutionClient", "SimClock", "WallClock", "client_order_id")},
    "BarBuilder": "live.bars",
    "ReplayFeed": "live.feeds",
    "QueueFeed": "live.feeds",
    "PaperBroker": "live.paper",
    "RiskConfig": "live.risk",
    "RiskEngine": "live.risk",
    "RateLimiter": "live.risk",
    "Journal": "live.journal",
    "request_control": "live.journal",
    "journal_status": "live.journal",
    "TradingLoop": "live.loop",
    "LoopConfig": "live.loop",
    "StreamFeatures": "live.loop",
    "current_bar": "live.loop",
    "ScheduledPolicy": "live.policies",
    "baseline_policy": "live.policies",
    "LiveMetrics": "live.metrics",
    "serve_metrics": "live.metrics",
    "configure_json_logging": "live.logs",
    "LiveConfig": "live.session",
    "build_replay_loop": "live.session",
    "run_replay_session": "live.session",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'live' has no attribute {name!r}")
