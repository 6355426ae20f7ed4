"""Structured JSON logs: one JSON object per line, with an ``event`` name and its fields.

```python
log = get_logger()
log.info("order", extra={"event": "order", "fields": {"client_order_id": "TB...", "status": "ACCEPTED"}})
```
``configure_json_logging(stream)`` attaches the JSON formatter to the ``tradebot.live`` logger.

Secrets (a broker token) registered with ``register_secret`` never reach a log line: ``redact`` replaces
them with ``***``, and ``JsonFormatter`` / ``RedactingFormatter`` apply it to the whole formatted line,
the exception's traceback included (a traceback is formatted after the record was made, so redacting
the record alone is not enough).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import threading
from datetime import datetime, timezone
from typing import Any, TextIO

LOGGER_NAME = "tradebot.live"
REDACTED = "***"

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(secret: str) -> None:
    """Never log ``secret`` (nor, for ``APPID:TOKEN``, the token part); short strings are ignored."""
    with _secrets_lock:
        for s in (secret, *secret.split(":", 1)[1:]):
            if s and len(s) >= 8:
                _secrets.add(s)


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    for s in sorted(_secrets, key=len, reverse=True):  # the longest first: "APPID:TOKEN" before "TOKEN"
        if s in text:
            text = text.replace(s, REDACTED)
    return text


class RedactingFormatter(logging.Formatter):
    """Wraps a handler's formatter: the finished line, traceback included, goes through ``redact``."""

    def __init__(self, inner: logging.Formatter | None = None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record))


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
            out["exc"] = record.exc_text or self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return redact(json.dumps(out, separators=(",", ":"), allow_nan=False))


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
