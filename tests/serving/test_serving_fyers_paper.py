"""``tradebot live --paper --feed fyers``: the served policy trading on paper on the Fyers data socket, with the
real fyers-apiv3 SDK talking to the local simulator. Nothing is sent to Fyers."""

from __future__ import annotations

import json
import sqlite3

import pytest
import requests
from click.testing import CliRunner

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_paper_run_on_the_fyers_feed_through_serve_writes_its_report_and_sends_no_order(
        served, trained, tmp_path, monkeypatch):
    import tradebot.cli.commands  # noqa: F401  (registers the command groups)
    from tradebot.live.adapters.fyers.auth import AuthSettings, login_url
    from tradebot.live.adapters.fyers.simulator import FyersSimulator
    from tradebot.cli import main

    monkeypatch.setenv("TRADEBOT_SERVE_TOKEN", served["token"])
    monkeypatch.setenv("FYERS_APP_ID", "SIMAPP-100")
    monkeypatch.setenv("FYERS_SECRET_KEY", "sim-secret-key")
    monkeypatch.setenv("FYERS_REDIRECT_URI", "https://127.0.0.1/cb")
    monkeypatch.setenv("TRADEBOT_FYERS_STATE_DIR", str(tmp_path / "state"))
    token_file = tmp_path / "fyers_token.json"
    monkeypatch.setenv("TRADEBOT_FYERS_TOKEN_FILE", str(token_file))
    runner = CliRunner()
    # the NIFTY 1-minute sample from its last session (2021-03-12), 300 market seconds per wall second
    with FyersSimulator(speed=300.0) as sim:
        url = login_url(AuthSettings.from_env(api_base=sim.base_url))
        redirect = requests.get(url, allow_redirects=False, timeout=5).headers["Location"]
        res = runner.invoke(main, ["fyers", "login", "--api-base", sim.base_url], input=redirect + "\n")
        assert res.exit_code == 0, res.output
        out = tmp_path / "run"
        res = runner.invoke(main, ["live", "--paper", "--feed", "fyers", "--symbols", "NSE:NIFTY50-INDEX",
                                   "--timeframe", "5m", "--clock", "exchange", "--until", "10:45",
                                   "--model", str(trained["path"]), "--serve-url", served["url"],
                                   "--out", str(out), "--no-log-json"])
        assert res.exit_code == 0, res.output
        assert sim.orders() == []  # paper: no order ever reached the broker
    db = sqlite3.connect(out / "journal.db")
    try:
        bars = db.execute("SELECT COUNT(*), MAX(ts) FROM bars WHERE done=1").fetchone()
        decisions = db.execute("SELECT COUNT(*), MIN(model_version) FROM decisions").fetchone()
    finally:
        db.close()
    assert bars[0] >= 5, res.output
    assert decisions[0] == bars[0] and decisions[1].startswith("serve:")
    assert {p.name for p in out.iterdir()} >= {"metrics.json", "equity.csv", "trades.csv", "report.html"}
    info = json.loads((out / "metrics.json").read_text())["run"]
    assert info["feed"] == "fyers" and info["mode"] == "paper"
    assert "bar(s)" in res.output and "risk state" in res.output
