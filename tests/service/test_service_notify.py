"""`tradebot notify` and the service's notifier: a webhook and a Telegram bot (a local Bot-API look-alike), the bot
token kept like the Fyers token (env var or a 0600 file) and never in any output."""

from __future__ import annotations

import json
import logging
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from click.testing import CliRunner

from tradebot.cli import main
from tradebot.core.errors import UserInputError
from tradebot.live.service.notify import TELEGRAM_TOKEN_ENV, Notifier
from tradebot.live.service.service_config import NotifyConfig

BOT_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"


class _Server:
    """Records POSTs by path; answers ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.posts: list[tuple[str, dict]] = []
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                posts.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b'{"ok": true}')

            def log_message(self, *args) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


def test_the_webhook_gets_the_message_as_json(server):
    failures = Notifier(NotifyConfig(webhook_url=server.base + "/hook")).send(
        "login needed", kind="login_needed", severity="critical", day="2024-03-21")
    assert failures == []
    (path, body), = server.posts
    assert path == "/hook"
    assert body == {"text": "login needed", "kind": "login_needed", "severity": "critical", "day": "2024-03-21",
                    "service": "tradebot-service"}


def test_telegram_gets_send_message_with_the_token_from_the_environment(server, monkeypatch, caplog):
    monkeypatch.setenv(TELEGRAM_TOKEN_ENV, BOT_TOKEN)
    notifier = Notifier(NotifyConfig(telegram_chat_id="42", telegram_api=server.base))
    assert notifier.channels == ("telegram",)
    assert BOT_TOKEN not in repr(notifier.__dict__.get("config"))
    assert notifier.send("day summary", severity="info") == []
    (path, body), = server.posts
    assert path == f"/bot{BOT_TOKEN}/sendMessage" and body["chat_id"] == "42" and body["text"] == "day summary"


def test_a_failed_delivery_is_reported_without_the_token(monkeypatch, tmp_path):
    token_file = tmp_path / "bot-token"
    token_file.write_text(BOT_TOKEN + "\n")
    os.chmod(token_file, 0o600)
    monkeypatch.delenv(TELEGRAM_TOKEN_ENV, raising=False)
    bad = _Server(status=500)
    try:
        failures = Notifier(NotifyConfig(telegram_chat_id="42", telegram_token_file=str(token_file),
                                         telegram_api=bad.base, webhook_url=bad.base + "/x")).send("x")
    finally:
        bad.close()
    assert failures == ["webhook: HTTP 500", "telegram: HTTP 500"]
    # nobody listening: the error names the channel, and the URL (which holds the token) is redacted
    failures = Notifier(NotifyConfig(telegram_chat_id="42", telegram_token_file=str(token_file),
                                     telegram_api="http://127.0.0.1:9")).send("x")
    assert len(failures) == 1 and failures[0].startswith("telegram: ") and BOT_TOKEN.split(":")[1] not in failures[0]


def test_a_bot_token_file_others_can_read_is_refused_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.delenv(TELEGRAM_TOKEN_ENV, raising=False)
    token_file = tmp_path / "bot-token"
    token_file.write_text(BOT_TOKEN)
    os.chmod(token_file, 0o644)
    with pytest.raises(UserInputError, match="chmod 600"):
        Notifier(NotifyConfig(telegram_chat_id="42", telegram_token_file=str(token_file)))
    with pytest.raises(UserInputError, match="no bot token"):
        Notifier(NotifyConfig(telegram_chat_id="42"))


def _config(tmp_path, **notify) -> str:
    path = tmp_path / "service.yaml"
    path.write_text(yaml.safe_dump({"service": {"state_dir": str(tmp_path / "state"), "symbols": ["NSE:SBIN-EQ"],
                                                "policy": {"url": "http://127.0.0.1:1/policy"}, "notify": notify}}))
    return str(path)


def test_tradebot_notify_sends_text_and_a_days_summary(server, tmp_path, monkeypatch):
    monkeypatch.setenv(TELEGRAM_TOKEN_ENV, BOT_TOKEN)
    config = _config(tmp_path, webhook_url=server.base + "/hook", telegram_chat_id="7", telegram_api=server.base)
    runner = CliRunner()
    result = runner.invoke(main, ["notify", "--config", config, "--text", "deploying v5", "--severity", "warning"])
    assert result.exit_code == 0, result.output
    assert "sent to webhook, telegram" in result.output and BOT_TOKEN not in result.output
    day = tmp_path / "state" / "days" / "2024-03-20"
    day.mkdir(parents=True)
    (day / "summary.json").write_text(json.dumps({"day": "2024-03-20", "mode": "paper", "traded": True,
                                                  "bars": {"NSE:SBIN-EQ": 75}, "day_pnl": 1250.5,
                                                  "equity_end": 1001250.5, "orders": 4, "fills": 4,
                                                  "risk_state": "ACTIVE", "flat": True}))
    result = runner.invoke(main, ["notify", "--config", config, "--day", "2024-03-20"])
    assert result.exit_code == 0, result.output
    texts = [b["text"] for p, b in server.posts if p == "/hook"]
    assert texts[-1].startswith("2024-03-20 paper: 75 bars, P&L +1,250.50") and "flat" in texts[-1]


def test_tradebot_notify_refuses_bad_input_with_one_line(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["notify", "--config", _config(tmp_path), "--text", "x"])
    assert result.exit_code == 2 and "sets no webhook_url and no telegram_chat_id" in result.output
    result = runner.invoke(main, ["notify", "--config", _config(tmp_path, webhook_url="http://127.0.0.1:9/"),
                                  "--day", "2024-03-20"])
    assert result.exit_code == 2 and "no summary for 2024-03-20" in result.output
    result = runner.invoke(main, ["notify", "--config", _config(tmp_path, webhok_url="x"), "--text", "x"])
    assert result.exit_code == 2 and "did you mean 'webhook_url'" in result.output


def test_the_notifier_never_logs_the_bot_token(server, monkeypatch, caplog):
    monkeypatch.setenv(TELEGRAM_TOKEN_ENV, BOT_TOKEN)
    from tradebot.live.logs import redact

    Notifier(NotifyConfig(telegram_chat_id="42", telegram_api=server.base))
    assert BOT_TOKEN.split(":")[1] not in redact(f"GET /bot{BOT_TOKEN}/sendMessage")
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("tradebot.live").warning("url %s", f"/bot{BOT_TOKEN}/x")
    assert all(BOT_TOKEN.split(":")[1] not in redact(r.getMessage()) for r in caplog.records)
