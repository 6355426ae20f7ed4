"""The service soak (``tradebot service soak``): the real service process over five simulated trading days against
the Fyers simulator (real SDK, real orders to the simulator) on an accelerated clock, with a weekend and Holi
(Mon 2024-03-25) slept through, a token that dies overnight (login alert, a person logs in, the day trades),
a SIGKILL in each phase (pre-open, warm-up, trading, square-off, report) and a SIGTERM mid-session.

It ends with every day's report written, each day's journal equal to the simulator's books of that day, and
uptime and restarts reported. A longer soak: ``tradebot service soak --days 20 --out DIR``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
import subprocess

import pytest

pytest.importorskip("fyers_apiv3")

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]


def test_five_trading_days_with_a_kill_in_every_phase_end_reported_consistent_and_measured(tmp_path):
    out = tmp_path / "soak"
    exe = Path(sys.executable).with_name("tradebot")
    run = subprocess.run([str(exe), "service", "soak", "--days", "5", "--speed", "1200", "--out", str(out)],
                         capture_output=True, text=True, timeout=560)
    report = json.loads((out / "soak.json").read_text())
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-3000:], report["breaches"])
    assert report["breaches"] == []
    assert [d["day"] for d in report["uptime"]["days"]] == ["2024-03-20", "2024-03-21", "2024-03-22", "2024-03-26",
                                                             "2024-03-27"]
    assert report["not_trading_days_slept"] == ["2024-03-23", "2024-03-24", "2024-03-25"]
    assert sorted(k for k in report["killed_in"]) == ["pre_open", "report", "square_off", "trading", "warm_up"]
    assert report["restarts"] == 5 and report["process_starts"] == 7  # 5 kills + a SIGTERM restart + the first
    assert report["logins"] == 1 and {"login_needed", "login_ok", "day_summary", "restarted"} <= set(report["alerts"])
    assert len(report["sigterm_exit_s"]) == 2 and max(report["sigterm_exit_s"]) < 10.0
    for day, inv in report["invariants"].items():
        assert all(v["ok"] for k, v in inv.items() if k != "bars"), (day, inv)
        assert inv["bars"] == {"NSE:SOAKA-EQ": 25}, day
        assert inv["journal_equals_broker"]["checked"] > 0
    assert sum(inv["one_broker_order_per_id"]["checked"] for inv in report["invariants"].values()) >= 5
    assert all(0.99 < d["uptime"] <= 1.0 for d in report["uptime"]["days"])
    assert report["uptime"]["months"][0]["month"] == "2024-03"
    assert report["endpoints_during_session"]["/healthz"]["status"] == 200
    status = subprocess.run([str(exe), "service", "status", "--state", str(out / "state")], capture_output=True,
                            text=True, timeout=60)
    assert status.returncode == 0 and "5 restarts after a crash" in status.stdout and "(month)" in status.stdout


def test_on_paper_each_days_journal_holds_that_days_fills_of_one_account_carried_over(tmp_path):
    out = tmp_path / "paper"
    exe = Path(sys.executable).with_name("tradebot")
    run = subprocess.run([str(exe), "service", "soak", "--mode", "paper", "--days", "2", "--out", str(out)],
                         capture_output=True, text=True, timeout=400)
    report = json.loads((out / "soak.json").read_text())
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-3000:], report["breaches"])
    assert report["mode"] == "paper" and report["breaches"] == []
    first, second = (report["invariants"][d] for d in ("2024-03-20", "2024-03-21"))
    assert first["journal_equals_paper_account"]["ok"] and first["journal_equals_paper_account"]["checked"] > 0
    assert second["journal_equals_paper_account"]["ok"] and second["account_carried_over"]["ok"]
    history = json.loads((out / "state" / "account" / "history.json").read_text())
    assert [h["day"] for h in history] == ["2024-03-20", "2024-03-21"]
    assert history[1]["day_start_equity"] == pytest.approx(history[0]["equity_end"])
