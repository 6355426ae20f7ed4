"""Reconciliation at start-up: pure functions from what the journal knows and what the broker reports to
what must change so that the journal agrees with the broker (the broker is authoritative).

```python
plan = reconcile(JournalState.read(journal), BrokerState.read(broker), now=now, state=risk.state)
# the loop applies it: plan.adopt / plan.expire / plan.new_fills (the order manager), plan.positions
# (the journal and the loop's view), plan.events (recorded)
```

Every finding is a ``reconcile`` risk event with its reason:

* an order whose status differs from the broker's: the broker's status is adopted;
* an order the broker does not know: ``PENDING_SUBMIT`` of a bar a crash left half-done is kept (it is
  sent, once, when that bar is finished); any other ``PENDING_SUBMIT`` never reached the broker and
  expires; an ``ACCEPTED`` one expires; an ``UNKNOWN`` one stays UNKNOWN (the order manager goes on
  looking it up, and halts if it stays missing);
* a broker order the journal does not have (placed outside this loop): reported, nothing else;
* fills the journal does not have: recorded;
* positions that differ from the journal's: the broker's are taken (they always are).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tradebot.live.journal import Journal
from tradebot.live.ports import ExecutionClient, Fill, OrderStatus, OrderUpdate, PositionReport, RiskEvent, RiskState


@dataclass(frozen=True)
class JournalState:
    """What the journal knows: its orders (rows with ``client_order_id``, ``symbol``, ``bar_ts``,
    ``status``), the bars received but not finished, its fill ids and its positions (symbol -> qty)."""

    orders: tuple[Mapping[str, Any], ...]
    undone_bars: frozenset[tuple[str, int]]
    fill_ids: frozenset[str]
    positions: Mapping[str, float]

    @classmethod
    def read(cls, journal: Journal) -> "JournalState":
        return cls(orders=tuple(journal.orders()),
                   undone_bars=frozenset((b.symbol, b.ts) for b in journal.undone_bars()),
                   fill_ids=frozenset(journal.fill_ids()),
                   positions={s: p.qty for s, p in journal.positions().items()})


@dataclass(frozen=True)
class BrokerState:
    """What the broker reports: the latest status of each order (by client order id), fills, positions."""

    orders: Mapping[str, OrderUpdate]
    fills: tuple[Fill, ...]
    positions: tuple[PositionReport, ...]

    @classmethod
    def read(cls, broker: ExecutionClient) -> "BrokerState":
        orders = {u.client_order_id: u for u in broker.order_status_reports()}
        return cls(orders=orders, fills=tuple(broker.fill_reports()), positions=tuple(broker.position_reports()))


@dataclass(frozen=True)
class Expire:
    client_order_id: str
    reason: str


@dataclass(frozen=True)
class Reconciliation:
    """What to change: statuses to adopt from the broker, orders to expire, fills to record, the
    positions to hold (the broker's), and the findings to record."""

    adopt: tuple[OrderUpdate, ...] = ()
    expire: tuple[Expire, ...] = ()
    new_fills: tuple[Fill, ...] = ()
    positions: tuple[PositionReport, ...] = ()
    events: tuple[RiskEvent, ...] = ()


def _finding(now: int, state: RiskState, reason: str, key: str, symbol: str = "") -> RiskEvent:
    return RiskEvent(ts=now, kind="reconcile", reason=reason, state=state, symbol=symbol, key=key)


def reconcile_orders(journal_orders: Iterable[Mapping[str, Any]], broker_orders: Mapping[str, OrderUpdate],
                     undone_bars: frozenset[tuple[str, int]] | set[tuple[str, int]], *, now: int,
                     state: RiskState) -> tuple[tuple[OrderUpdate, ...], tuple[Expire, ...], list[RiskEvent]]:
    """The journal's orders against the broker's: (statuses to adopt, orders to expire, findings)."""
    adopt: list[OrderUpdate] = []
    expire: list[Expire] = []
    events: list[RiskEvent] = []
    known: set[str] = set()
    for row in journal_orders:
        coid, status, symbol = row["client_order_id"], OrderStatus(row["status"]), row["symbol"]
        known.add(coid)
        rep = broker_orders.get(coid)
        if rep is not None:
            if rep.status is not status:
                events.append(_finding(now, state, f"order {coid}: journal {status.value}, broker "
                                       f"{rep.status.value}; the broker's status kept",
                                       f"reconcile:status:{coid}:{rep.status.value}", symbol))
                adopt.append(rep)
        elif status is OrderStatus.PENDING_SUBMIT:
            if (symbol, row["bar_ts"]) in undone_bars:
                continue  # sent (once) when its bar is finished
            expire.append(Expire(coid, "never reached the broker (the process stopped before sending it)"))
            events.append(_finding(now, state, f"order {coid} never reached the broker; expired",
                                   f"reconcile:expired:{coid}", symbol))
        elif status is OrderStatus.UNKNOWN:
            events.append(_finding(now, state, f"order {coid}: outcome still unknown (not in the broker's reports); "
                                   "looking it up", f"reconcile:unknown_outcome:{coid}", symbol))
        elif status is OrderStatus.ACCEPTED:
            expire.append(Expire(coid, "unknown to the broker at reconciliation"))
            events.append(_finding(now, state, f"working order {coid} unknown to the broker; expired",
                                   f"reconcile:unknown:{coid}", symbol))
    for coid, rep in broker_orders.items():
        if coid not in known:
            events.append(_finding(now, state, f"broker order {coid} ({rep.status.value}) is not in the journal "
                                   "(placed outside this loop)", f"reconcile:external:{coid}", rep.symbol))
    return tuple(adopt), tuple(expire), events


def recover_fills(journal_fill_ids: frozenset[str] | set[str], broker_fills: Sequence[Fill], *, now: int,
                  state: RiskState) -> tuple[tuple[Fill, ...], list[RiskEvent]]:
    """The broker's fills the journal does not have (each once), and the finding when there are any."""
    seen = set(journal_fill_ids)
    new: list[Fill] = []
    for f in broker_fills:
        if f.fill_id not in seen:
            seen.add(f.fill_id)
            new.append(f)
    if not new:
        return (), []
    return tuple(new), [_finding(now, state, f"{len(new)} fill(s) recovered from the broker's reports",
                                 f"reconcile:fills:{now}")]


def reconcile_positions(journal_positions: Mapping[str, float], broker_positions: Sequence[PositionReport], *,
                        now: int, state: RiskState) -> list[RiskEvent]:
    """The finding when the broker's positions differ from the journal's (the broker's are taken anyway)."""
    after = {p.symbol: p.qty for p in broker_positions}
    before = dict(journal_positions)
    if before == after:
        return []
    return [_finding(now, state, f"positions corrected from the broker: journal {before}, broker {after}",
                     f"reconcile:positions:{now}")]


def reconcile(journal: JournalState, broker: BrokerState, *, now: int, state: RiskState) -> Reconciliation:
    """Everything to change so that the journal agrees with the broker; see the module docstring."""
    adopt, expire, events = reconcile_orders(journal.orders, broker.orders, journal.undone_bars, now=now, state=state)
    new_fills, fill_events = recover_fills(journal.fill_ids, broker.fills, now=now, state=state)
    position_events = reconcile_positions(journal.positions, broker.positions, now=now, state=state)
    return Reconciliation(adopt=adopt, expire=expire, new_fills=new_fills, positions=broker.positions,
                          events=tuple(events + fill_events + position_events))


__all__ = ["BrokerState", "Expire", "JournalState", "Reconciliation", "reconcile", "reconcile_orders",
           "reconcile_positions", "recover_fills"]
