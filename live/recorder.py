"""Where the live loop's parts report what happened: risk events into the journal (and the JSON log, and
the rejection metric), and log events tagged with the run's name.

```python
recorder = Recorder(journal, metrics, get_logger(), run="paper-1")
recorder.log(logging.INFO, "submit", client_order_id="TB...")
recorder.risk([RiskEvent(...)])      # journaled (de-duplicated by key), logged, vetoes counted
```
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from tradebot.live.journal import Journal
from tradebot.live.logs import log_event
from tradebot.live.ports import RiskEvent, Verdict
from tradebot.live.prometheus import LiveMetrics

WARNING_KINDS = ("daily_loss", "kill_switch", "fatal", "control", "reconcile")


class Recorder:
    """See the module docstring."""

    def __init__(self, journal: Journal, metrics: LiveMetrics, logger: logging.Logger, run: str):
        self.journal = journal
        self.metrics = metrics
        self.logger = logger
        self.run = run

    def log(self, level: int, event: str, **fields: Any) -> None:
        log_event(self.logger, level, event, run=self.run, **fields)

    def risk(self, events: Sequence[RiskEvent]) -> None:
        if not events:
            return
        self.journal.record_risk_events(events)
        for e in events:
            level = logging.WARNING if e.kind in WARNING_KINDS else logging.INFO
            self.log(level, "risk", kind=e.kind, reason=e.reason, state=e.state.value, symbol=e.symbol,
                     details=dict(e.details))
            if e.kind == Verdict.VETO.value:
                self.metrics.rejections.labels("risk", str(e.details.get("code", "other"))).inc()
