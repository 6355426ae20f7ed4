"""Start-up reconciliation as pure functions: (journal state, broker state) -> what must change."""

from __future__ import annotations

from tradebot.live.journal import Journal
from tradebot.live.ports import Fill, Intent, OrderRequest, OrderStatus, OrderUpdate, PositionReport, RiskState, Side
from tradebot.live.reconcile import (
    BrokerState,
    Expire,
    JournalState,
    reconcile,
    reconcile_orders,
    reconcile_positions,
    recover_fills,
)

SYM = "NSE:TEST-EQ"
NOW = 1_000
ACTIVE = RiskState.ACTIVE


def _row(coid: str, status: OrderStatus, bar_ts: int = 5) -> dict:
    return {"client_order_id": coid, "symbol": SYM, "bar_ts": bar_ts, "status": status.value}


def _update(coid: str, status: OrderStatus) -> OrderUpdate:
    return OrderUpdate(coid, SYM, status, NOW - 1, filled_qty=10.0 if status is OrderStatus.FILLED else 0.0)


def _fill(fill_id: str) -> Fill:
    return Fill(fill_id, "C1", "C1", SYM, Side.BUY, 10.0, 100.0, 1.0, 5, "entry")


def test_a_status_that_differs_from_the_brokers_is_adopted_with_a_finding():
    adopt, expire, events = reconcile_orders([_row("C1", OrderStatus.ACCEPTED), _row("C2", OrderStatus.FILLED)],
                                             {"C1": _update("C1", OrderStatus.FILLED),
                                              "C2": _update("C2", OrderStatus.FILLED)},
                                             set(), now=NOW, state=ACTIVE)
    assert adopt == (_update("C1", OrderStatus.FILLED),) and expire == ()
    (e,) = events
    assert e.kind == "reconcile" and e.symbol == SYM and e.ts == NOW and e.state is ACTIVE
    assert e.key == "reconcile:status:C1:FILLED" and "journal ACCEPTED, broker FILLED" in e.reason


def test_pending_submit_of_an_undone_bar_is_kept_for_that_bar():
    adopt, expire, events = reconcile_orders([_row("C1", OrderStatus.PENDING_SUBMIT, bar_ts=5)], {}, {(SYM, 5)},
                                             now=NOW, state=ACTIVE)
    assert adopt == () and expire == () and events == []


def test_pending_submit_of_a_finished_bar_never_reached_the_broker_and_expires():
    _, expire, events = reconcile_orders([_row("C1", OrderStatus.PENDING_SUBMIT, bar_ts=5)], {}, {(SYM, 6)},
                                         now=NOW, state=RiskState.HALTED)
    assert expire == (Expire("C1", "never reached the broker (the process stopped before sending it)"),)
    (e,) = events
    assert e.key == "reconcile:expired:C1" and e.state is RiskState.HALTED and "never reached the broker" in e.reason


def test_an_accepted_order_the_broker_does_not_know_expires():
    _, expire, events = reconcile_orders([_row("C1", OrderStatus.ACCEPTED), _row("C2", OrderStatus.CANCELED)], {},
                                         set(), now=NOW, state=ACTIVE)
    assert expire == (Expire("C1", "unknown to the broker at reconciliation"),)  # a terminal one is left alone
    assert [e.key for e in events] == ["reconcile:unknown:C1"]


def test_a_broker_order_placed_outside_the_loop_is_reported_only():
    adopt, expire, events = reconcile_orders([], {"X9": _update("X9", OrderStatus.ACCEPTED)}, set(), now=NOW,
                                             state=ACTIVE)
    assert adopt == () and expire == ()
    (e,) = events
    assert e.key == "reconcile:external:X9" and "not in the journal" in e.reason and e.symbol == SYM


def test_fills_the_journal_lacks_are_recovered_once_each():
    new, events = recover_fills({"F1"}, [_fill("F1"), _fill("F2"), _fill("F2")], now=NOW, state=ACTIVE)
    assert [f.fill_id for f in new] == ["F2"]
    assert [e.reason for e in events] == ["1 fill(s) recovered from the broker's reports"]
    assert recover_fills({"F1"}, [_fill("F1")], now=NOW, state=ACTIVE) == ((), [])


def test_positions_that_differ_are_corrected_from_the_broker():
    broker = [PositionReport(SYM, 10.0, 100.0)]
    (e,) = reconcile_positions({SYM: 5.0}, broker, now=NOW, state=ACTIVE)
    assert e.key == f"reconcile:positions:{NOW}" and "journal {'NSE:TEST-EQ': 5.0}, broker {'NSE:TEST-EQ': 10.0}" in e.reason
    assert reconcile_positions({SYM: 10.0}, broker, now=NOW, state=ACTIVE) == []
    assert reconcile_positions({}, [], now=NOW, state=ACTIVE) == []


def test_reconcile_puts_the_findings_together_and_always_takes_the_brokers_positions():
    journal = JournalState(orders=(_row("C1", OrderStatus.ACCEPTED), _row("C2", OrderStatus.PENDING_SUBMIT)),
                           undone_bars=frozenset(), fill_ids=frozenset(), positions={})
    broker = BrokerState(orders={"C1": _update("C1", OrderStatus.FILLED)}, fills=(_fill("F1"),),
                         positions=(PositionReport(SYM, 10.0, 100.0),))
    plan = reconcile(journal, broker, now=NOW, state=ACTIVE)
    assert [u.client_order_id for u in plan.adopt] == ["C1"] and [e.client_order_id for e in plan.expire] == ["C2"]
    assert [f.fill_id for f in plan.new_fills] == ["F1"] and plan.positions == broker.positions
    assert [e.key.split(":")[1] for e in plan.events] == ["status", "expired", "fills", "positions"]
    quiet = reconcile(JournalState((), frozenset(), frozenset(), {}), BrokerState({}, (), ()), now=NOW, state=ACTIVE)
    assert quiet.events == () and quiet.positions == ()


def test_journal_state_reads_what_the_journal_knows():
    j = Journal()
    order = OrderRequest("C1", SYM, Side.BUY, 10.0, Intent.ENTRY, bar_ts=5, created_ns=5)
    j.insert_order(order)
    j.record_fill(_fill("F1"), 0)
    j.set_positions([PositionReport(SYM, 10.0, 100.0)], 0)
    state = JournalState.read(j)
    assert [(r["client_order_id"], r["status"]) for r in state.orders] == [("C1", "PENDING_SUBMIT")]
    assert state.fill_ids == {"F1"} and state.positions == {SYM: 10.0} and state.undone_bars == frozenset()
