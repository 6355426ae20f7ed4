"""Messages to people: a webhook (any JSON receiver: Slack-compatible relays, Alertmanager-style bridges) and a
Telegram bot. ``tradebot notify`` and the service use it for the day's summary and critical events.

```python
notifier = Notifier(NotifyConfig(webhook_url="http://127.0.0.1:9000/hook", telegram_chat_id="12345"))
failures = notifier.send("login needed before 09:15", kind="login_needed", severity="critical")
```

The webhook gets ``{"text", "kind", "severity", "day", "service"}`` as JSON. Telegram gets the text through
the Bot API's ``sendMessage``. The bot token is kept like the Fyers token: ``$TRADEBOT_TELEGRAM_TOKEN``, or
a file only its owner can read (``telegram_token_file``, mode 0600; a looser one is refused with the
``chmod 600`` fix). It is registered with the log redaction, so it never reaches a log line or an error
message. ``send`` never raises for a delivery failure: it returns what failed (the service goes on
trading; ``tradebot notify`` exits 1).
"""

from __future__ import annotations

import json
import os
import stat
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tradebot.core.errors import UserInputError
from tradebot.live.logs import redact, register_secret
from tradebot.live.service.service_config import NotifyConfig

TELEGRAM_TOKEN_ENV = "TRADEBOT_TELEGRAM_TOKEN"
SEVERITIES = ("info", "warning", "critical")


def telegram_token(config: NotifyConfig) -> str | None:
    """The bot token from ``$TRADEBOT_TELEGRAM_TOKEN`` or the 0600 ``telegram_token_file``; None when neither."""
    token = os.environ.get(TELEGRAM_TOKEN_ENV, "").strip()
    if not token and config.telegram_token_file:
        path = Path(config.telegram_token_file).expanduser()
        if not path.is_file():
            raise UserInputError(f"{path}: telegram_token_file not found (write the bot token there, mode 0600)")
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise UserInputError(f"{path}: the Telegram bot token file is readable by others (mode {mode:o}); "
                                 f"run: chmod 600 {path}")
        token = path.read_text().strip()
    if token:
        register_secret(token)
        return token
    return None


class Notifier:
    """See the module docstring."""

    def __init__(self, config: NotifyConfig, service: str = "tradebot-service"):
        self.config = config
        self.service = service
        self._telegram = telegram_token(config) if config.telegram_chat_id else None
        if config.telegram_chat_id and self._telegram is None:
            raise UserInputError(f"notify.telegram_chat_id is set but there is no bot token: set ${TELEGRAM_TOKEN_ENV} "
                                 "or notify.telegram_token_file (mode 0600)")

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(c for c, on in (("webhook", self.config.webhook_url), ("telegram", self._telegram)) if on)

    def send(self, text: str, *, kind: str = "message", severity: str = "info", day: str | None = None,
             extra: dict[str, Any] | None = None) -> list[str]:
        """Deliver ``text`` to every configured channel; returns one line per channel that failed."""
        if severity not in SEVERITIES:
            raise UserInputError(f"severity {severity!r}: one of {', '.join(SEVERITIES)}")
        failures = []
        if self.config.webhook_url:
            body = {"text": text, "kind": kind, "severity": severity, "day": day, "service": self.service,
                    **(extra or {})}
            failures += self._post("webhook", self.config.webhook_url, body)
        if self._telegram:
            url = f"{self.config.telegram_api.rstrip('/')}/bot{self._telegram}/sendMessage"
            prefix = {"critical": "\u2757 ", "warning": "\u26a0 "}.get(severity, "")
            failures += self._post("telegram", url, {"chat_id": self.config.telegram_chat_id,
                                                     "text": f"{prefix}{text}", "disable_web_page_preview": True})
        return failures

    def _post(self, channel: str, url: str, body: dict[str, Any]) -> list[str]:
        req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.config.timeout_s) as resp:
                if resp.status >= 300:
                    return [f"{channel}: HTTP {resp.status}"]
        except urllib.error.HTTPError as err:
            return [f"{channel}: HTTP {err.code}"]
        except (urllib.error.URLError, OSError, ValueError) as err:
            return [redact(f"{channel}: {getattr(err, 'reason', err)}")]
        return []


__all__ = ["Notifier", "SEVERITIES", "TELEGRAM_TOKEN_ENV", "telegram_token"]
