"""Structured JSON logs: one JSON object per line, with an ``event`` name and its fields.

```python
log = get_logger()
log.info("order", extra={"event": "order", "fields": {"client_order_id": "TB...", "status": "ACCEPTED"}})
```
``configure_json_logging(stream)`` attaches the JSON formatter to the ``tradebot.live`` logger.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from datetime import datetime, timezone
from typing import Any, TextIO

LOGGER_NAME = "tradebot.live"


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _clean(value.item())
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "event", "msg", ...fields}`` on one line; NaN becomes null."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", record.getMessage()),
        }
        msg = record.getMessage()
        if msg and msg != out["event"]:
            out["msg"] = msg
        fields = getattr(record, "fields", None)
        if fields:
            out.update(_clean(dict(fields)))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, separators=(",", ":"), allow_nan=False)


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


def configure_json_logging(stream: TextIO | None = None, level: int = logging.INFO) -> logging.Handler:
    """Send the live loop's logs as JSON lines to ``stream`` (stderr by default); returns the handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger = get_logger()
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return handler


def log_event(logger: logging.Logger, level: int, event: str, **fields: Any) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={"event": event, "fields": fields})
