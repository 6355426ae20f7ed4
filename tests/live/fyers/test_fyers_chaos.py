"""The chaos soak (``tradebot chaos``) and the live process's exits, on the real SDK against the simulator.

* a 2-minute soak: SIGKILLs with downtime (the first on the journal's first session), SIGINTs, lost replies,
  a lagging order book, order-socket drops and refusals, a token dying during a submit, a slow policy, 503s and
  429s on submits, halts and resumes, a second loop on the journal; every invariant must hold;
* defect 11: the live process exits within 10 s of SIGTERM / SIGINT, and by itself after a fatal error (the
  SDK's order-socket thread kept it alive and the broker was never disconnected).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fyers_apiv3")

pytestmark = pytest.mark.timeout(600)


def test_a_two_minute_chaos_soak_keeps_every_invariant(tmp_path) -> None:
    out = tmp_path / "chaos"
    exe = Path(sys.executable).with_name("tradebot")
    run = subprocess.run([str(exe), "chaos", "--minutes", "2", "--seed", "7", "--out", str(out)], capture_output=True,
                         text=True, timeout=540)
    report = json.loads((out / "invariants.json").read_text())
    assert run.returncode == 0, (run.stdout[-3000:], report["breaches"])
    assert report["breaches"] == [] and all(v["ok"] for v in report["invariants"].values())
    assert report["restarts"] >= 2 and report["kills"] >= 1 and len(report["faults"]) >= 3
    assert report["orders"] >= 5 and report["fills"] >= 5
    assert report["invariants"]["journal_equals_broker"]["checked"] >= 10
    assert "breaches: 0" in run.stdout


def test_the_live_process_exits_within_10_s_of_a_signal_and_by_itself_after_a_fatal_error(tmp_path) -> None:
    from tradebot.live.chaos import Soak

    soak = Soak(1.0, 3, tmp_path / "soak", say=lambda line: None)
    soak.sim.start()
    try:
        soak.login()
        for sig in (signal.SIGTERM, signal.SIGINT):
            child = soak.spawn()
            assert child.wait_ready(), child.text()[-2000:]
            time.sleep(4.0)  # trading: orders, sockets, policy calls in flight
            took = child.stop(sig, 30)
            assert took is not None and took < 10.0 and child.proc.returncode == 0, (took, child.text()[-2000:])
            assert "STOPPED" in child.text()
        child = soak.spawn()
        assert child.wait_ready(), child.text()[-2000:]
        soak.sim.inject("expire_tokens", count=1, route="/orders/sync", method="POST")  # dies during a submit
        child.proc.wait(90)
        assert child.proc.returncode == 3 and "fatal:" in child.text()
        from tradebot.live.journal import Journal

        j = Journal(soak.journal, create=False)
        assert j.status()["risk_state"] == "HALTED" and j.get_meta("run") == "chaos"
        j.close()
    finally:
        soak.sim.stop()
