"""The order manager on its own: working orders, submit once, the order-rate limit, a submit the adapter
gave up on, and the broker's answers applied to the journal."""

from __future__ import annotations

import logging

import pytest

from tradebot.core.errors import RetryableError
from tradebot.envs.engine import EngineConfig
from tradebot.live.journal import Journal
from tradebot.live.orders import OrderManager
from tradebot.live.ports import (
    AccountReport,
    ExecutionClient,
    Intent,
    OrderRequest,
    OrderStatus,
    OrderUpdate,
    Side,
    SimClock,
)
from tradebot.live.prometheus import LiveMetrics
from tradebot.live.recorder import Recorder
from tradebot.live.risk import RiskConfig, RiskEngine

SYM = "NSE:TEST-EQ"


class Broker(ExecutionClient):
    """Answers submits from a script (an ``OrderUpdate`` status, or an exception to raise); counts calls."""

    def __init__(self, answers=(), known=None):
        self.answers = list(answers)
        self.known: dict[str, OrderUpdate] = dict(known or {})
        self.submits: list[str] = []
        self.lookups: list[str] = []

    def submit(self, order):
        self.submits.append(order.client_order_id)
        answer = self.answers.pop(0) if self.answers else OrderStatus.ACCEPTED
        if isinstance(answer, Exception):
            raise answer
        return OrderUpdate(order.client_order_id, order.symbol, answer, 1)

    def order_status(self, client_order_id):
        self.lookups.append(client_order_id)
        return self.known.get(client_order_id)

    def connect(self): ...
    def disconnect(self): ...
    def cancel(self, client_order_id): return OrderUpdate(client_order_id, SYM, OrderStatus.CANCELED, 1)
    def cancel_all(self, symbol=None): return []
    def order_status_reports(self): return list(self.known.values())
    def fill_reports(self, since_ns=None): return []
    def position_reports(self): return []
    def account_report(self): return AccountReport(0, 1e6, 1e6)
    def poll_events(self): return []


def _order(coid="C1", bar_ts=5, reduce_only=False) -> OrderRequest:
    return OrderRequest(coid, SYM, Side.BUY, 10.0, Intent.EXIT if reduce_only else Intent.ENTRY, bar_ts=bar_ts,
                        created_ns=bar_ts, reduce_only=reduce_only)


def _manager(broker, risk: RiskConfig | None = None) -> OrderManager:
    journal = Journal()
    engine = RiskEngine(risk or RiskConfig(), EngineConfig(), "5m")
    recorder = Recorder(journal, LiveMetrics(), logging.getLogger("tradebot.test"), "r")
    return OrderManager(broker, journal, engine, recorder, SimClock(10))


def test_an_order_written_ahead_by_this_process_is_sent_once_without_asking():
    broker = Broker()
    m = _manager(broker)
    m.write_ahead(_order())
    m.track(_order(), unsent=True)
    assert m.working(SYM) == _order()
    answer = m.submit_once(_order(), 10)
    assert answer.status is OrderStatus.ACCEPTED and broker.submits == ["C1"] and broker.lookups == []
    m.apply(answer)
    assert m.submit_once(_order(), 11) is None and broker.submits == ["C1"]  # answered before: never again
    assert m.orders_sent == 1 and m.journal.order("C1")["submit_attempts"] == 1


def test_an_order_an_earlier_process_wrote_is_looked_up_before_it_is_sent():
    broker = Broker(known={"C1": OrderUpdate("C1", SYM, OrderStatus.ACCEPTED, 3)})
    m = _manager(broker)
    m.journal.insert_order(_order())  # PENDING_SUBMIT, written before a crash
    assert m.submit_once(_order(), 10).status is OrderStatus.ACCEPTED
    assert broker.submits == [] and broker.lookups == ["C1"]


def test_the_order_rate_limit_expires_an_order_without_calling_the_broker():
    broker = Broker()
    m = _manager(broker, RiskConfig(orders_per_second=1, orders_per_minute=1))
    m.write_ahead(_order("C1"))
    m.write_ahead(_order("C2", bar_ts=6))
    assert m.submit_once(_order("C1"), 10).status is OrderStatus.ACCEPTED
    late = m.submit_once(_order("C2", bar_ts=6), 10)
    assert late.status is OrderStatus.EXPIRED and late.reason == "not sent: order rate limit"
    assert broker.submits == ["C1"] and [e["kind"] for e in m.journal.risk_events()] == ["rate_limited"]


def test_an_entry_decided_while_active_is_not_sent_once_the_state_left_active_but_an_exit_is():
    """A SIGTERM's "exits only" (set from the service's main thread) can land between the bar's risk check
    and the submit: the entry must stay unsent, and the state journaled with a sent entry is ACTIVE."""
    from tradebot.live.ports import RiskState

    broker = Broker()
    m = _manager(broker)
    m.write_ahead(_order("C1"))
    m.write_ahead(_order("C2", reduce_only=True))
    m.risk.set_condition("service_stopping", RiskState.REDUCING, "the service is stopping: exits only", 9,
                         kind="service")
    entry = m.submit_once(_order("C1"), 10)
    assert entry.status is OrderStatus.EXPIRED and entry.reason == "not sent: risk state REDUCING"
    assert m.submit_once(_order("C2", reduce_only=True), 10).status is OrderStatus.ACCEPTED
    assert broker.submits == ["C2"] and m.journal.order("C1")["submit_attempts"] == 0
    assert m.journal.order("C2")["sent_state"] == "REDUCING"
    assert [e["kind"] for e in m.journal.risk_events()] == ["veto"]


@pytest.mark.parametrize("broker_has_it", [True, False])
def test_a_submit_without_an_answer_is_looked_up_and_else_unknown_never_rejected_nor_resent(broker_has_it):
    """Defect 1: a timeout after the broker committed the order, with its book lagging, was recorded as
    REJECTED "not sent" (and the next decision sent another order). Now it is UNKNOWN until found."""
    known = {"C1": OrderUpdate("C1", SYM, OrderStatus.ACCEPTED, 3)} if broker_has_it else {}
    broker = Broker(answers=[RetryableError("read timed out")], known=known)
    m = _manager(broker)
    m.write_ahead(_order())
    answer = m.submit_once(_order(), 10)
    assert broker.submits == ["C1"] and broker.lookups == ["C1"]
    if broker_has_it:
        assert answer.status is OrderStatus.ACCEPTED
    else:
        assert answer.status is OrderStatus.UNKNOWN and "read timed out" in answer.reason
        m.apply(answer)
        assert m.working(SYM) == _order() and m.journal.order("C1")["status"] == "UNKNOWN"
        assert m.submit_once(_order(), 11) is None and broker.submits == ["C1"]  # never resent
        assert [e["kind"] for e in m.journal.risk_events()] == ["order_unknown"]
    assert m.orders_sent == 0


def test_an_unknown_order_is_found_by_id_or_halts_then_expires():
    broker = Broker(answers=[RetryableError("read timed out")])
    m = _manager(broker)
    m.poll_s, m.halt_s, m.expire_s = 1.0, 30.0, 300.0
    m.write_ahead(_order())
    m.apply(m.submit_once(_order(), 10))
    s = 1_000_000_000
    assert m.resolve_unknown(10 + s // 2) == [] and broker.lookups == ["C1"]  # polled at most every poll_s
    assert m.resolve_unknown(10 + 2 * s) == [] and m.risk.state.value == "ACTIVE"
    halt = m.resolve_unknown(10 + 31 * s)
    assert [e.kind for e in halt] == ["order_unknown"] and m.risk.state.value == "HALTED"
    broker.known["C1"] = OrderUpdate("C1", SYM, OrderStatus.FILLED, 40, filled_qty=10.0)  # the book caught up
    found = m.resolve_unknown(10 + 40 * s)
    assert m.journal.order("C1")["status"] == "FILLED" and m.risk.state.value == "ACTIVE" and found
    # one that never shows up: halted, then expired as never received; the halt stays until `resume`
    broker.answers = [RetryableError("read timed out")]
    m.write_ahead(_order("C2", bar_ts=6))
    m.apply(m.submit_once(_order("C2", bar_ts=6), 50 * s))
    m.resolve_unknown(50 * s + 301 * s)
    assert m.journal.order("C2")["status"] == "EXPIRED" and m.working(SYM) is None
    assert m.risk.state.value == "HALTED"
    m.risk.apply_control("resume", "checked the account", 400 * s)
    assert m.risk.state.value == "ACTIVE"


def test_an_order_a_crashed_process_may_have_sent_is_unknown_not_resent():
    """After a restart, an order written ahead *and* counted as sent, which the broker's (lagging) books do
    not show, is not sent again: UNKNOWN (a broker whose order tags are not unique would take it twice)."""
    broker = Broker()
    m = _manager(broker)
    m.journal.insert_order(_order())
    m.journal.note_submit("C1", 5, "ACTIVE")
    answer = m.submit_once(_order(), 10)
    assert answer.status is OrderStatus.UNKNOWN and broker.submits == [] and broker.lookups == ["C1"]


def test_cancel_entries_keeps_the_exits_and_close_all_ends_every_order():
    broker = Broker()
    m = _manager(broker)
    for order in (_order("E1", 5), _order("X1", 5, reduce_only=True)):
        m.write_ahead(order)
        m.track(order, unsent=True)
        m.apply(m.submit_once(order, 10))
    m.cancel_entries(11, "risk state HALTED")
    assert m.journal.order("E1")["status"] == "CANCELED" and m.journal.order("X1")["status"] == "ACCEPTED"
    m.write_ahead(_order("P1", 6))
    m.close_all(12, "the run ended")
    assert m.journal.order("X1")["status"] == "CANCELED"
    assert m.journal.order("P1")["status"] == "EXPIRED" and m.journal.order("P1")["reason"] == \
        "the run ended before it was sent"


def test_an_adopted_status_replaces_even_a_terminal_one():
    m = _manager(Broker())
    m.write_ahead(_order())
    m.apply(OrderUpdate("C1", SYM, OrderStatus.CANCELED, 5))
    m.apply(OrderUpdate("C1", SYM, OrderStatus.ACCEPTED, 6))  # a plain (late) update never revives it
    assert m.journal.order("C1")["status"] == "CANCELED"
    m.apply(OrderUpdate("C1", SYM, OrderStatus.ACCEPTED, 6, broker_order_id="B7"), adopt=True)  # reconciliation
    row = m.journal.order("C1")
    assert row["status"] == "ACCEPTED" and row["broker_order_id"] == "B7" and row["updated_ns"] == 6
