"""``tradebot live``: run a paper replay, read its status, halt and resume it; bad input exits 2."""

from __future__ import annotations

import json

import yaml
from click.testing import CliRunner

from tradebot.live.journal import Journal
from live_helpers import MINIMAL_FEATURES, sample_csv
from tradebot.cli.cmd_live import live


def _config(tmp_path):
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump({"live": {"features": MINIMAL_FEATURES.model_dump(mode="json"),
                                             "loop": {"run": "cli-test"},
                                             "risk": {"max_daily_loss": 0.03}}}))
    return path


def _data(tmp_path):
    return sample_csv(tmp_path, "2021-03-01", "2021-03-04")


def test_paper_replay_status_halt_resume(tmp_path):
    runner = CliRunner()
    journal = tmp_path / "paper.db"
    args = ["--paper", "--replay", str(_data(tmp_path)), "--journal", str(journal), "--config", str(_config(tmp_path)),
            "--strategy", "random", "--seed", "4", "--start", "2021-03-02", "--no-log-json"]
    res = runner.invoke(live, args)
    assert res.exit_code == 0, res.output
    assert "150 bar(s)" in res.output and "risk state ACTIVE" in res.output
    assert (tmp_path / "paper.db.paper.db").is_file()
    assert not (tmp_path / "metrics.json").exists()  # no --out: the journal only

    res = runner.invoke(live, ["status", "--journal", str(journal), "--json"])
    st = json.loads(res.output)
    assert st["run"] == "cli-test" and st["risk_state"] == "ACTIVE" and st["decisions"] == 150
    assert st["last_bar"]["time"].startswith("2021-03-03T15:25")

    res = runner.invoke(live, ["halt", "--journal", str(journal), "--reason", "fat finger"])
    assert res.exit_code == 0 and "halt requested (#1)" in res.output
    res = runner.invoke(live, ["status", "--journal", str(journal)])
    assert "pending command #1: halt fat finger" in res.output and "risk state ACTIVE" in res.output
    assert runner.invoke(live, ["resume", "--journal", str(journal)]).exit_code == 0

    # running again resumes after the last bar: nothing left to do, nothing sent twice
    res = runner.invoke(live, args)
    assert res.exit_code == 0 and "0 bar(s)" in res.output
    j = Journal(journal, create=False)
    try:
        assert j.status()["pending_commands"] == []  # applied by the resumed loop
        assert [e["kind"] for e in j.risk_events() if e["kind"] == "control"] == ["control", "control"]
    finally:
        j.close()


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    runner = CliRunner()
    res = runner.invoke(live, ["status", "--journal", str(tmp_path / "missing.db")])
    assert res.exit_code == 2 and res.output.startswith("error: ") and "journal not found" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("live:\n  risk:\n    max_dayly_loss: 0.1\n")
    res = runner.invoke(live, ["--paper", "--replay", str(_data(tmp_path)), "--journal", str(tmp_path / "j.db"),
                               "--config", str(bad), "--no-log-json"])
    assert res.exit_code == 2 and "did you mean 'max_daily_loss'" in res.output
    res = runner.invoke(live, ["halt", "--journal", str(tmp_path / "missing.db")])
    assert res.exit_code == 2
    for args, says in ([["--paper", "--out", str(tmp_path / "o")], "--paper needs a feed: --replay DATA"],
                       [["--replay", str(_data(tmp_path)), "--out", str(tmp_path / "o")], "say --paper"],
                       [["--paper", "--replay", str(_data(tmp_path))], "give --out DIR"],
                       [["--paper", "--replay", str(_data(tmp_path)), "--out", str(tmp_path / "o"), "--speed", "fast"],
                        "--speed 'fast'"],
                       [["--paper", "--replay", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")], "nope.csv"],
                       [["--paper", "--feed", "fyers", "--symbols", "NSE:SBIN-EQ", "--out", str(tmp_path / "o")],
                        "needs a trained policy"],
                       [["--paper", "--feed", "fyers", "--model", "m", "--out", str(tmp_path / "o")], "needs --symbols"],
                       [["--live", "--replay", str(_data(tmp_path)), "--out", str(tmp_path / "o")], "paper only"],
                       [["--paper", "--live", "--replay", str(_data(tmp_path)), "--out", str(tmp_path / "o")],
                        "not both"],
                       [["--live", "--feed", "fyers", "--symbols", "NSE:SBIN-EQ", "--model", "m", "--out",
                         str(tmp_path / "o")], "add --broker fyers"],
                       [["--live", "--broker", "fyers", "--feed", "fyers", "--symbols", "NSE:SBIN-EQ", "--model", "m",
                         "--out", str(tmp_path / "o")], "--i-understand-real-money"],
                       [["--paper", "--broker", "fyers", "--feed", "fyers", "--symbols", "NSE:SBIN-EQ", "--model", "m",
                         "--out", str(tmp_path / "o")], "drop --broker fyers"]):
        res = runner.invoke(live, args)
        assert res.exit_code == 2 and res.output.startswith("error: ") and says in res.output, (args, res.output)
        assert len(res.output.strip().splitlines()) == 1


def test_live_group_plugs_into_the_tradebot_cli():
    """The real `tradebot` entry point has the group (the old test registered it itself when it was missing)."""
    import subprocess
    import sys
    from pathlib import Path

    from tradebot.cli import main

    assert main.commands.get("live") is live and "chaos" in main.commands
    exe = Path(sys.executable).with_name("tradebot")
    out = subprocess.run([str(exe), "live", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "halt" in out.stdout and "--replay" in out.stdout
    res = CliRunner().invoke(main, ["live", "--help"])
    assert res.exit_code == 0 and "halt" in res.output and "status" in res.output and "--replay" in res.output
    assert CliRunner().invoke(main, ["live"]).output == res.output  # no flags: the help


def test_a_risk_file_that_sets_no_limits_is_refused_before_anything_loads(tmp_path):
    """Defect 2: an empty --risk-config was accepted with default limits; the CLI loaded the model (Ray
    started, tens of seconds) before checking anything, then exited 1 printing an object repr."""
    import time

    runner = CliRunner()
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    args = ["--live", "--broker", "fyers", "--feed", "fyers", "--symbols", "NSE:SBIN-EQ", "--model",
            str(tmp_path / "no-such-model"), "--i-understand-real-money", "--out", str(tmp_path / "o"), "--no-log-json"]
    t0 = time.monotonic()
    res = runner.invoke(live, [*args, "--risk-config", str(empty)])
    assert res.exit_code == 2 and res.output.startswith("error: ") and len(res.output.strip().splitlines()) == 1
    assert "empty.yaml: sets no limits" in res.output and time.monotonic() - t0 < 10
    both = tmp_path / "both.yaml"
    both.write_text("risk:\n  max_position: 10\n  max_notional: 100000\n  max_daily_loss: 0.01\n  max_drawdown: 0.05\n")
    config = tmp_path / "live.yaml"
    config.write_text("live:\n  risk:\n    max_position: 5000\n")
    res = runner.invoke(live, [*args, "--risk-config", str(both), "--config", str(config)])
    assert res.exit_code == 2 and "keep the limits in one place" in res.output  # never silently replaced


def test_a_second_run_on_the_same_journal_is_refused_with_exit_2(tmp_path):
    """Defect 10, through the CLI: a second `tradebot live --paper --replay ... --out SAME` ran alongside the
    first."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    data = _data(tmp_path)
    out = tmp_path / "run"
    config = _config(tmp_path)
    exe = Path(sys.executable).with_name("tradebot")
    first = subprocess.Popen([str(exe), "live", "--paper", "--replay", str(data), "--speed", "300", "--out", str(out),
                              "--no-parity", "--config", str(config), "--no-log-json"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lock = out / "journal.db.lock"
        end = time.monotonic() + 60
        while not (lock.exists() and lock.read_text().startswith("pid")) and time.monotonic() < end:
            time.sleep(0.1)
        assert first.poll() is None, "the first run ended before the second could try"
        res = CliRunner().invoke(live, ["--paper", "--replay", str(data), "--out", str(out), "--config", str(config),
                                        "--no-parity", "--no-log-json"])  # the same run, a second time
        assert res.exit_code == 2 and "already running on this journal" in res.output, res.output
    finally:
        first.kill()
        first.wait(30)
