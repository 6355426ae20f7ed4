"""``tradebot notify``: send a message, or a day's summary, to the webhook / Telegram bot of a service config.

\b
  tradebot notify --config experiments/service.yaml --text "deploying v5 tonight"
  tradebot notify --config experiments/service.yaml --day 2024-03-20       (that day's summary.json)

The Telegram bot token comes from $TRADEBOT_TELEGRAM_TOKEN or the 0600 file notify.telegram_token_file; it is
never printed. Exit codes: 0 delivered everywhere; 1 a channel failed (named); 2 bad input.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click

from tradebot.core.errors import UserInputError


@click.command("notify", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="a service config (its `service.notify` section says where messages go)")
@click.option("--text", default=None, help="the message")
@click.option("--day", default=None, help="or: send this day's summary (YYYY-MM-DD, from STATE_DIR/days/DAY/summary.json)")
@click.option("--severity", type=click.Choice(["info", "warning", "critical"]), default="info", show_default=True)
@click.option("--kind", default="message", show_default=True, help="a short tag receivers can route on")
def notify(config_path: Path, text: str | None, day: str | None, severity: str, kind: str) -> None:
    """Send a message (or a day's summary) to the configured webhook and Telegram chat."""
    from tradebot.live.service.notify import Notifier
    from tradebot.live.service.service_config import ServiceConfig
    from tradebot.live.service.session import day_dir, day_summary_text

    try:
        config = ServiceConfig.from_yaml(config_path)
        if (text is None) == (day is None):
            raise UserInputError("give --text MESSAGE or --day YYYY-MM-DD (one of them)")
        if day is not None:
            try:
                date = dt.date.fromisoformat(day)
            except ValueError:
                raise UserInputError(f"--day {day!r}: a date like 2024-03-20") from None
            path = day_dir(config, date) / "summary.json"
            if not path.is_file():
                raise UserInputError(f"{path}: no summary for {day} (the service writes it in the day's report phase)")
            text, kind = day_summary_text(json.loads(path.read_text())), "day_summary"
        notifier = Notifier(config.notify)
        if not notifier.channels:
            raise UserInputError(f"{config_path}: service.notify sets no webhook_url and no telegram_chat_id")
    except UserInputError as err:
        click.echo(f"error: {err}", err=True)
        raise SystemExit(2) from None
    failures = notifier.send(text, kind=kind, severity=severity, day=day)
    for f in failures:
        click.echo(f"failed: {f}", err=True)
    click.echo(f"sent to {', '.join(c for c in notifier.channels if not any(f.startswith(c) for f in failures)) or 'nobody'}")
    if failures:
        raise SystemExit(1)
