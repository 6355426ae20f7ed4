"""Crash safety: a paper replay run is SIGKILLed at random points (and at the exact points where a
crash hurts most), restarted each time, and must end with the journal, the broker and the positions
exactly as an uninterrupted run leaves them, with no order sent twice."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tradebot.live.journal import Journal
from live_crash_run import SYMBOL, build
from live_helpers import sample_bars

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "live_crash_run.py"


@pytest.fixture(scope="module")
def run_files(tmp_path_factory):
    """Eight sessions of the 5m sample as a CSV, and a busy schedule of random actions (the invalid ones
    -- a close when flat, an entry when holding -- are vetoed by the risk engine)."""
    tmp = tmp_path_factory.mktemp("crash")
    bars = sample_bars().between("2021-03-01", "2021-03-11")
    csv = tmp / "bars.csv"
    frame = bars.frame.reset_index()
    frame["timestamp"] = frame["timestamp"].map(lambda t: t.isoformat())
    frame.to_csv(csv, index=False)
    actions = np.random.default_rng(3).choice([0, 0, 0, 0, 0, 0, 1, 2, 3, 4], size=len(bars))
    npy = tmp / "actions.npy"
    np.save(npy, actions)
    return tmp, csv, npy, len(bars)


def _spawn(csv, npy, journal, paper, *kill):
    return subprocess.Popen([sys.executable, str(SCRIPT), str(csv), str(npy), str(journal), str(paper),
                             *map(str, kill)], cwd=HERE.parents[1], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _broker_orders(paper: Path) -> dict[str, tuple]:
    db = sqlite3.connect(paper)
    try:
        return {r[0]: r[1:] for r in db.execute("SELECT client_order_id, status, filled_qty, avg_price, submit_calls "
                                                "FROM orders")}
    finally:
        db.close()


def _broker_fill_ids(paper: Path) -> set[str]:
    db = sqlite3.connect(paper)
    try:
        return {r[0] for r in db.execute("SELECT fill_id FROM fills")}
    finally:
        db.close()


def _check_consistent(journal: Path, paper: Path, all_ts: list[int]) -> None:
    """What must hold after any crash: no order recorded as sent that the broker lacks, no fill the
    broker lacks, bars done form a prefix of the data, every order decided at most once."""
    j = Journal(journal, create=False)
    try:
        broker = _broker_orders(paper)
        for o in j.orders():
            if o["status"] != "PENDING_SUBMIT":
                assert o["client_order_id"] in broker or o["status"] == "EXPIRED"
        assert {f.fill_id for f in j.fills()} <= _broker_fill_ids(paper)
        done = [b.ts for b in j.bars(SYMBOL, done=True)]
        assert done == all_ts[:len(done)]
        assert all(calls == 1 for *_, calls in broker.values())
    finally:
        j.close()


def _snapshot(journal: Path, paper: Path) -> dict:
    j = Journal(journal, create=False)
    try:
        db = j.db
        return {
            "decisions": db.execute("SELECT symbol, bar_ts, decided_ns, model_version, features_hash, action, "
                                    "final_action, verdict, reasons, risk_state, client_order_id, loss_budget "
                                    "FROM decisions ORDER BY symbol, bar_ts").fetchall(),
            "orders": db.execute("SELECT client_order_id, symbol, bar_ts, intent, side, qty, status, filled_qty, "
                                 "avg_price, request FROM orders ORDER BY client_order_id").fetchall(),
            "fills": repr(j.fills()),  # (NaN fields compare equal as text)
            "equity": db.execute("SELECT * FROM equity ORDER BY ts").fetchall(),
            "positions": repr(j.positions()),
            "bars": db.execute("SELECT symbol, ts, done FROM bars ORDER BY symbol, ts").fetchall(),
            "risk": j.load_state("risk"),
            "risk_events": db.execute("SELECT ts, symbol, kind, state, reason FROM risk_events WHERE kind != "
                                      "'reconcile' ORDER BY key").fetchall(),
            "broker_orders": _broker_orders(paper),
            "broker_fills": _broker_fill_ids(paper),
        }
    finally:
        j.close()


def test_sigkill_at_random_points_then_restart_ends_exactly_like_an_uninterrupted_run(run_files):
    tmp, csv, npy, n = run_files
    # the reference: the same run, uninterrupted, in this process
    ref_j, ref_p = tmp / "ref.db", tmp / "ref.paper.db"
    loop = build(csv, npy, ref_j, ref_p)
    summary = loop.run()
    loop.journal.close()
    assert summary.bars == n and summary.orders > 60
    reference = _snapshot(ref_j, ref_p)
    all_ts = [ts for _, ts, _ in reference["bars"]]

    journal, paper = tmp / "j.db", tmp / "j.paper.db"
    rng = np.random.default_rng(20240601)
    # the exact points where a crash hurts most first (they fit in the 600 bars), then random moments
    plan = [("broker_processed", int(rng.integers(10, 80))),  # the broker moved, the journal does not know
            ("submitted", int(rng.integers(3, 15))),  # the broker has the order, the journal not its answer
            ("decided", int(rng.integers(10, 80))),  # decision and order journaled, not yet sent
            ("bar_done", int(rng.integers(10, 80))),
            ("timer", float(rng.uniform(0.02, 0.3))),
            ("timer", float(rng.uniform(0.02, 0.3)))]
    killed = 0
    for what, arg in plan:
        if what == "timer":
            proc = _spawn(csv, npy, journal, paper)
            assert proc.stdout.readline().strip() == "READY"
            time.sleep(arg)
            proc.send_signal(signal.SIGKILL)
        else:
            proc = _spawn(csv, npy, journal, paper, what, arg)
        out, err = proc.communicate(timeout=120)
        if proc.returncode == -signal.SIGKILL:
            killed += 1
        else:
            assert proc.returncode == 0, err[-2000:]
        _check_consistent(journal, paper, all_ts)
    assert killed >= 4
    proc = _spawn(csv, npy, journal, paper)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "DONE" in out

    got = _snapshot(journal, paper)
    for key in reference:
        assert got[key] == reference[key], key
    # no order was sent twice, and every order the journal has the broker has (and the other way round)
    assert all(calls == 1 for *_, calls in got["broker_orders"].values())
    j = Journal(journal, create=False)
    try:
        assert {o["client_order_id"] for o in j.orders()} == set(got["broker_orders"])
        kinds = {e["kind"] for e in j.risk_events()}
        assert "reconcile" in kinds  # the restarts found (and repaired) work the journal had missed
    finally:
        j.close()
