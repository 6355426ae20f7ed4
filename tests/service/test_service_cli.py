"""`tradebot service` on the command line: help everywhere, bad input as one line and exit 2, `status` from a
state, and the real process: probes on 127.0.0.1 and a graceful SIGTERM."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import yaml
from click.testing import CliRunner

from tradebot.cli import main
from tradebot.live.service.state import Phase, ServiceState, ist_ns

NS = 1_000_000_000


@pytest.mark.parametrize("args", [["service"], ["service", "status"], ["service", "soak"], ["notify"]])
def test_every_service_command_has_help(args):
    result = CliRunner().invoke(main, [*args, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


def test_a_config_with_an_unknown_key_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "service.yaml"
    path.write_text(yaml.safe_dump({"service": {"state_dir": str(tmp_path), "symbols": ["NSE:SBIN-EQ"],
                                                "policy": {"url": "http://127.0.0.1:1"}, "shedule": {}}}))
    result = CliRunner().invoke(main, ["service", "--config", str(path)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: {path} [service]: unknown config key 'shedule' (did you mean 'schedule'?)"]
    result = CliRunner().invoke(main, ["service", "status", "--state", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "no service state here" in result.output


def test_status_reports_days_uptime_per_day_and_month_and_restarts(tmp_path):
    day = dt.date(2024, 3, 26)
    state = ServiceState(tmp_path / "service.db")
    a = state.process_started(ist_ns(day, 8 * 60), pid=1)
    state.seen(a, ist_ns(day, 12 * 60))  # killed at noon
    b = state.process_started(ist_ns(day, 12 * 60 + 5), pid=2)
    state.seen(b, ist_ns(day, 16 * 60))
    state.process_ended(b, ist_ns(day, 16 * 60))
    state.enter(day, Phase.DONE, ist_ns(day, 15 * 60 + 35), bars=75, orders=4, fills=4)
    state.close()
    result = CliRunner().invoke(main, ["service", "status", "--state", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "2 process starts, 1 restarts after a crash" in result.output
    assert re.search(r"2024-03-26\s+done\s+bars 75, orders 4, fills 4", result.output)
    assert re.search(r"2024-03-26\s+98\.667%\s+down 300 s of 22500 s, 1 start\(s\) in market hours; "
                     r"down 12:00:00-12:05:00 IST", result.output)  # 5 minutes down
    assert re.search(r"2024-03\s+98\.667%\s+\(month\)", result.output)
    as_json = json.loads(CliRunner().invoke(main, ["service", "status", "--state", str(tmp_path), "--json"]).output)
    assert as_json["uptime"]["restarts"] == 1 and as_json["uptime"]["days"][0]["down_s"] == pytest.approx(300)


def test_the_service_process_answers_its_probes_and_stops_within_10_s_on_sigterm(tmp_path):
    config = tmp_path / "service.yaml"
    config.write_text(yaml.safe_dump({"service": {
        "state_dir": str(tmp_path / "state"), "symbols": ["NSE:SBIN-EQ"], "port": 0,
        "policy": {"url": "http://127.0.0.1:1/policy"}, "token_file": str(tmp_path / "no-token.json"),
        "schedule": {"heartbeat_s": 0.2, "token_recheck_s": 5}}}))
    log = tmp_path / "service.log"
    proc = subprocess.Popen([sys.executable, "-m", "tradebot.live.service.service_process", str(config)],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        end, port = time.monotonic() + 60, None
        while port is None and time.monotonic() < end and proc.poll() is None:
            match = re.search(r"endpoints: http://127\.0\.0\.1:(\d+)/healthz", log.read_text())
            port = match and int(match.group(1))
            time.sleep(0.1)
        assert port, log.read_text()[-2000:]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert r.status == 200
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
                ready = json.loads(r.read())
        except urllib.error.HTTPError as err:  # a trading day's pre-open without a token: not ready, says why
            assert err.code == 503
            ready = json.loads(err.read())
            assert ready["checks"]["token"] is False and "no Fyers token" in ready["reasons"]["token"]
        assert set(ready["checks"]) == {"token", "feed", "policy"}
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        assert "tradebot_service_up 1.0" in text and "tradebot_live_risk_state" in text
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert time.monotonic() - t0 < 10.0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    state = ServiceState(tmp_path / "state" / "service.db", read_only=True)
    assert [lv["ended"] for lv in state.lives()] == ["clean"]
    assert "stopped (SIGTERM / Ctrl-C)" in log.read_text()
