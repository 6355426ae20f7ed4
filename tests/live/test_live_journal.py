"""The journal: idempotent client order ids, submit-once after crashes and lost acknowledgements,
reconciliation, control commands and status."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tradebot.envs.engine import Action, EngineConfig
from tradebot.live.journal import Journal, journal_status, request_control
from tradebot.live.paper import PaperBroker
from tradebot.live.ports import (
    OrderNotSent,
    Intent,
    OrderRequest,
    OrderStatus,
    OrderUpdate,
    RiskDecision,
    RiskEvent,
    RiskState,
    Side,
    Verdict,
    client_order_id,
)
from live_helpers import make_bars, replay_loop
from tradebot.core.errors import RetryableError, UserInputError

SYM = "NSE:TEST-EQ"
BUY, CL = int(Action.BUY_LONG), int(Action.CLOSE_LONG)


def _order(bar_ts=1, intent=Intent.ENTRY, run="s") -> OrderRequest:
    return OrderRequest(client_order_id=client_order_id(run, SYM, bar_ts, intent), symbol=SYM, side=Side.BUY,
                        qty=10.0, intent=intent, bar_ts=bar_ts, created_ns=bar_ts, stop_loss=2.0, take_profit=3.0,
                        reference_price=100.0, atr=1.0)


def test_client_order_ids_are_deterministic_and_distinct():
    a = client_order_id("paper-1", SYM, 123, Intent.ENTRY)
    assert a == client_order_id("paper-1", SYM, 123, "entry")
    assert len(a) == 20 and a.isalnum() and a.isupper()
    others = {client_order_id(s, y, t, i) for s in ("paper-1", "paper-2") for y in (SYM, "NSE:X-EQ")
              for t in (123, 124) for i in Intent}
    assert len(others) == 2 * 2 * 2 * len(Intent)


def test_order_request_round_trips_through_the_journal():
    o = _order()
    assert OrderRequest.from_dict(o.to_dict()) == o
    j = Journal()
    assert j.insert_order(o) and not j.insert_order(o)  # the unique key: never twice
    assert j.order_request(o.client_order_id) == o
    assert j.order(o.client_order_id)["status"] == "PENDING_SUBMIT"


def test_a_decision_recorded_twice_keeps_the_first_and_one_order():
    j = Journal()
    o = _order()
    d = RiskDecision(SYM, 1, BUY, BUY, Verdict.ACCEPT, (), RiskState.ACTIVE, order=o, loss_budget=5.0)
    assert j.record_decision(d, decided_ns=1, model_version="m", features_hash="h")
    again = RiskDecision(SYM, 1, CL, 0, Verdict.VETO, ("x",), RiskState.ACTIVE)
    assert not j.record_decision(again, decided_ns=2, model_version="m", features_hash="h")
    assert j.decision(SYM, 1)["action"] == BUY
    assert len(j.orders()) == 1


def test_terminal_order_status_is_never_replaced_by_a_working_one():
    j = Journal()
    o = _order()
    j.insert_order(o)
    assert j.update_order(OrderUpdate(o.client_order_id, SYM, OrderStatus.FILLED, 5, 10.0, 100.5))
    assert not j.update_order(OrderUpdate(o.client_order_id, SYM, OrderStatus.ACCEPTED, 6))  # a late ack
    row = j.order(o.client_order_id)
    assert row["status"] == "FILLED" and row["filled_qty"] == 10.0 and row["avg_price"] == 100.5


def test_fills_and_risk_events_are_recorded_once():
    from tradebot.live.ports import Fill

    j = Journal()
    f = Fill("F1", "C1", "C1", SYM, Side.BUY, 10.0, 100.0, 1.0, 5, "entry", 98.0, 103.0)
    assert j.record_fill(f, 0) and not j.record_fill(f, 1)
    e = RiskEvent(1, "veto", "why", RiskState.ACTIVE, SYM, {"code": "x"}, key="veto:x:1")
    assert j.record_risk_events([e, e]) == 1


def test_status_lists_the_risk_events_that_changed_something_not_no_op_vetoes():
    j = Journal()
    j.record_risk_events([RiskEvent(1, "resize", "loss budget", RiskState.ACTIVE, SYM, {"code": "loss_budget"},
                                    key="resize:1")])
    j.record_risk_events([RiskEvent(2 + k, "veto", "no long position to close", RiskState.ACTIVE, SYM,
                                    {"code": "no_position"}, key=f"veto:{k}") for k in range(20)])
    j.record_risk_events([RiskEvent(30, "veto", "a position is already open", RiskState.ACTIVE, SYM,
                                    {"code": "position_open"}, key="veto:open"),
                          RiskEvent(31, "veto", "stale data", RiskState.ACTIVE, SYM, {"code": "stale"}, key="veto:s")])
    shown = j.status()["risk_events"]
    assert [e["reason"] for e in shown] == ["loss budget", "stale data"]
    assert len(j.risk_events()) == 23  # every event stays in the journal


def test_run_and_setup_are_checked(tmp_path):
    path = tmp_path / "j.db"
    Journal(path, run="a").close()
    with pytest.raises(UserInputError, match="run 'a'"):
        Journal(path, run="b")
    j = Journal(path)
    j.check_setup(symbols="NSE:A-EQ")
    with pytest.raises(UserInputError, match="symbols NSE:A-EQ, not NSE:B-EQ"):
        j.check_setup(symbols="NSE:B-EQ")
    j.close()
    with pytest.raises(UserInputError, match="journal not found"):
        Journal(tmp_path / "nope.db", create=False)
    (tmp_path / "junk.db").write_text("not sqlite at all " * 100)
    with pytest.raises(UserInputError, match="not a tradebot journal"):
        Journal(tmp_path / "junk.db")


def test_a_journal_written_before_the_rename_keeps_its_run_name(tmp_path):
    path = tmp_path / "old.db"
    old = Journal(path)
    old.set_meta("session", "paper-1")  # the meta key journals had before runs were called runs
    old.close()
    j = Journal(path, run="paper-1")
    assert j.run == "paper-1" and j.get_meta("run") is None and j.status()["run"] == "paper-1"
    j.close()
    with pytest.raises(UserInputError, match="journal of run 'paper-1', not 'other'"):
        Journal(path, run="other")


def test_control_requests_from_another_process_and_status(tmp_path):
    path = tmp_path / "j.db"
    Journal(path, run="s").close()
    assert request_control(path, "halt", "lunch") == 1
    assert request_control(path, "resume") == 2
    st = journal_status(path)
    assert [c["command"] for c in st["pending_commands"]] == ["halt", "resume"]
    assert st["risk_state"] == "ACTIVE" and st["run"] == "s"
    with pytest.raises(UserInputError, match="unknown command"):
        request_control(path, "panic")


class LostAck(PaperBroker):
    """The broker takes the order, but the answer is lost on the way back (a timeout)."""

    lose = 1

    def submit(self, order):
        update = super().submit(order)
        if self.lose > 0:
            self.lose -= 1
            raise RetryableError("read timed out")
        return update


def _bars(n=20):
    o = [100.0 + k for k in range(n)]
    return make_bars(SYM, "2024-01-01", o, [v + 0.5 for v in o], [v - 0.5 for v in o], [v + 0.2 for v in o])


def test_a_lost_acknowledgement_is_looked_up_not_resent():
    bars = _bars()
    actions = np.full(20, BUY)
    loop = replay_loop(bars, actions, np.full(20, 1.0))
    loop.broker = broker = LostAck(EngineConfig(), [SYM], clock=loop.feed.clock)
    loop.run()
    counts = broker.submit_counts()
    assert counts and all(v == 1 for v in counts.values())
    first = loop.journal.orders()[0]
    assert first["status"] == "FILLED" and first["submit_attempts"] == 1


class Flaky(PaperBroker):
    """Fails the first N submits with ``OrderNotSent`` (what an adapter raises once its own bounded retries
    gave up on a failure that proves the request never reached the 'exchange', e.g. a refused connection);
    counts submits and status look-ups per order."""

    failures = 2

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: dict[str, int] = {}
        self.lookups: dict[str, int] = {}

    def submit(self, order):
        self.calls[order.client_order_id] = self.calls.get(order.client_order_id, 0) + 1
        if self.failures > 0:
            self.failures -= 1
            raise OrderNotSent("connection refused", retry_after=0.0)
        return super().submit(order)

    def order_status(self, client_order_id):
        self.lookups[client_order_id] = self.lookups.get(client_order_id, 0) + 1
        return super().order_status(client_order_id)


def test_an_order_the_adapter_proves_was_never_sent_is_rejected_as_not_sent_and_never_resent():
    """Retries belong to the adapter, bounded there (tests/live/fyers/test_fyers_adapter_errors.py); the
    loop sends an order once and records one the adapter proves never left (``OrderNotSent``) as not sent,
    without asking the broker about it."""
    bars = _bars()
    loop = replay_loop(bars, np.full(20, BUY), np.full(20, 1.0))
    loop.broker = broker = Flaky(EngineConfig(), [SYM], clock=loop.feed.clock)
    loop.run()
    rows = loop.journal.orders()
    failed, sent = rows[:2], rows[2:]
    for r in failed:
        assert r["status"] == "REJECTED" and r["reason"] == "not sent: connection refused" and r["submit_attempts"] == 1
        assert broker.calls[r["client_order_id"]] == 1 and r["client_order_id"] not in broker.lookups
    assert sent and sent[0]["status"] == "FILLED" and sent[0]["submit_attempts"] == 1
    assert all(v == 1 for v in broker.calls.values()) and all(v == 1 for v in broker.submit_counts().values())
    assert sum(e["kind"] == "broker_reject" for e in loop.journal.risk_events()) == 2

    loop2 = replay_loop(bars, np.full(20, BUY), np.full(20, 1.0))
    loop2.broker = never = Flaky(EngineConfig(), [SYM], clock=loop2.feed.clock)
    never.failures = 10**6
    loop2.run()
    rows = loop2.journal.orders()
    assert rows and all(r["status"] == "REJECTED" and r["reason"] == "not sent: connection refused" for r in rows)
    assert all(v == 1 for v in never.calls.values())
    assert any(e["kind"] == "broker_reject" for e in loop2.journal.risk_events())


def test_restart_after_the_broker_got_an_order_the_journal_missed(tmp_path):
    """Crash between the broker's acceptance and the journal's record: on restart the order is found
    at the broker (by its deterministic id) and not sent again."""
    bars = _bars()
    jpath, ppath = tmp_path / "j.db", tmp_path / "p.db"
    stop_at = int(bars.index[5].value)

    class Crash(Exception):
        pass

    def crash(stage, symbol, ts):
        if stage == "submitted" and ts == stop_at:
            raise Crash

    loop = replay_loop(bars, np.where(np.arange(20) == 5, BUY, 0), np.full(20, 1.0), journal=Journal(jpath),
                       broker_path=str(ppath), on_stage=crash)
    with pytest.raises(Crash):
        loop.run()
    j = loop.journal
    assert j.orders()[0]["status"] == "PENDING_SUBMIT" and j.undone_bars()
    loop.broker.disconnect()
    j.close()

    again = replay_loop(bars, np.where(np.arange(20) == 5, BUY, 0), np.full(20, 1.0), journal=Journal(jpath),
                        broker_path=str(ppath))
    summary = again.run()
    assert summary.resumed_bars == 1 and summary.bars == 15 and summary.orders == 0  # bars 5..19; nothing re-sent
    assert len(again.journal.bars(SYM, done=True)) == 20
    counts = again.broker.submit_counts() if again.broker.is_connected else None
    rows = again.journal.orders()
    assert len(rows) == 1 and rows[0]["status"] == "FILLED"
    import sqlite3

    db = sqlite3.connect(ppath)
    assert db.execute("SELECT submit_calls FROM orders").fetchall() == [(1,)]
    db.close()
    assert counts is None  # finish() disconnected the broker
    assert math.isfinite(again.summary().equity)
