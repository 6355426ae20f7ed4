"""The order manager: the loop's orders from decision to their last status.

```python
orders = OrderManager(broker, journal, risk, recorder, clock)
orders.load()                                  # start-up: the orders the journal has working
orders.track(order, unsent=True)               # decided at a bar (written ahead as PENDING_SUBMIT)
answer = orders.submit_once(order, now)        # None when there is nothing new; journal it with apply()
orders.apply_events(broker.poll_events(), now) # fills and order updates, journaled once each
```

It owns which orders are working (at most one per symbol, as the risk engine allows), sends each
order once and cancels, and applies the broker's answers, events and the start-up reconciliation to
the journal with their metrics and log lines.

Sending once: an order written ahead by this process is sent without asking; one written by an
earlier process (a restart) is first looked up at the broker by its client order id, as it may have
gone out just before a crash. Every call to the broker counts against the risk engine's order-rate
limit. Retrying a temporary failure is the adapter's job (``tradebot.live.ports.ExecutionClient``):
the manager never resends. A submit that still fails with ``RetryableError`` goes to
``after_transport_failure``, the one place that decides what such an order becomes: REJECTED when
the adapter proves it never reached the broker (``OrderNotSent``), else UNKNOWN.

An UNKNOWN order is never sent again. It stays working (nothing else is sent for its symbol) and
``resolve_unknown`` asks the broker for it by id (its order book and trade book) every ``poll_s``:
found, its status is taken; still missing after ``halt_s``, the risk engine HALTS (``unresolved:ID``,
lifted when it is found or by ``resume``); missing after ``expire_s``, it expires as never received
(the halt stays until ``resume``: a person looks at the account).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from tradebot.core.errors import RejectedError, RetryableError
from tradebot.live.journal import Journal
from tradebot.live.ports import (
    NS_PER_SECOND,
    Clock,
    ExecutionClient,
    Fill,
    Intent,
    OrderNotSent,
    OrderRequest,
    OrderStatus,
    OrderUpdate,
    RiskEvent,
    RiskState,
)
from tradebot.live.reconcile import Reconciliation
from tradebot.live.recorder import Recorder
from tradebot.live.risk import RiskEngine

WORKING = (OrderStatus.PENDING_SUBMIT, OrderStatus.ACCEPTED, OrderStatus.UNKNOWN)


class OrderManager:
    """See the module docstring. ``on_stage(stage, symbol, bar_ts)`` hears ``submitted``."""

    def __init__(self, broker: ExecutionClient, journal: Journal, risk: RiskEngine, recorder: Recorder, clock: Clock,
                 on_stage: Callable[[str, str, int], None] | None = None, *, poll_s: float = 2.0,
                 halt_s: float = 30.0, expire_s: float = 600.0):
        self.broker = broker
        self.poll_s, self.halt_s, self.expire_s = poll_s, halt_s, expire_s
        self._polled: dict[str, int] = {}  # UNKNOWN order -> when it was last looked up
        self.journal = journal
        self.risk = risk
        self.recorder = recorder
        self.clock = clock
        self.on_stage = on_stage
        self.orders_sent = 0  # orders the broker took in this process
        self.fills_recorded = 0  # fills journaled from the broker's events in this process
        self._open: dict[str, OrderRequest] = {}  # working, or about to be sent
        self._unsent: set[str] = set()  # written ahead by this process, not sent yet: no need to ask the broker

    # ---------------------------------------------------------------------------- state
    def load(self) -> None:
        """The orders the journal has working (start-up, after reconciliation)."""
        self._open = {}
        for row in self.journal.orders(WORKING):
            req = self.journal.order_request(row["client_order_id"])
            if req is not None:
                self._open[req.client_order_id] = req

    def working(self, symbol: str) -> OrderRequest | None:
        """The order working (or about to be sent) for ``symbol``, if any."""
        return next((o for o in self._open.values() if o.symbol == symbol), None)

    def track(self, order: OrderRequest, *, unsent: bool) -> None:
        """An order decided at a bar; ``unsent``: this process just wrote it ahead."""
        if unsent:
            self._unsent.add(order.client_order_id)
        self._open.setdefault(order.client_order_id, order)

    def write_ahead(self, order: OrderRequest) -> None:
        """Journal ``order`` as ``PENDING_SUBMIT`` (an order decided between bars); known ids stay as they are."""
        if self.journal.insert_order(order):
            self._unsent.add(order.client_order_id)

    # -------------------------------------------------------------------------- sending
    def submit_once(self, order: OrderRequest, now: int) -> OrderUpdate | None:
        """Send ``order`` unless it was sent before; returns the broker's answer for the caller to journal
        (None when there is nothing new). Raises the broker's ``FatalError``."""
        j = self.journal
        coid = order.client_order_id
        if coid not in self._unsent:
            row = j.order(coid)
            if row is None:
                j.insert_order(order)
            elif row["status"] != OrderStatus.PENDING_SUBMIT.value:
                return None  # sent and answered before (or UNKNOWN: looked up, never resent)
            else:
                try:
                    known = self.broker.order_status(coid)
                except RetryableError as err:
                    return self._unknown(order, f"looking it up after a restart failed ({err})")
                if known is not None:
                    return known
                if row["submit_attempts"] and not getattr(self.broker, "idempotent_submit", False):
                    # an earlier process may have sent it just before it stopped: a broker's books can lag
                    return self._unknown(order, "it may have been sent before the restart and is not in the "
                                         "broker's books yet")
        self._unsent.discard(coid)  # from here on it counts as sent: never again
        self._open.setdefault(coid, order)
        if not self.risk.limiter.allow(now):
            self.recorder.risk([RiskEvent(ts=now, kind="rate_limited", reason=f"order {coid} not sent: order rate "
                                          "limit", state=self.risk.state, symbol=order.symbol,
                                          key=f"rate_limited:{coid}")])
            return OrderUpdate(coid, order.symbol, OrderStatus.EXPIRED, now, reason="not sent: order rate limit")
        # one reading of the state both decides and is journaled: a stop (SIGTERM: exits only) or a halt that
        # lands from another thread after the bar's risk check still keeps this entry from going out
        state = self.risk.state
        if order.intent is Intent.ENTRY and state is not RiskState.ACTIVE:
            self.recorder.risk([RiskEvent(ts=now, kind="veto", reason=f"entry {coid} not sent: risk state {state.value}",
                                          state=state, symbol=order.symbol, key=f"veto_unsent:{coid}")])
            return OrderUpdate(coid, order.symbol, OrderStatus.EXPIRED, now, reason=f"not sent: risk state {state.value}")
        self.risk.limiter.record(now)
        j.note_submit(coid, now, state.value)
        try:
            update = self.broker.submit(order)
        except RejectedError as err:
            self._stage("submitted", order)
            return OrderUpdate(coid, order.symbol, OrderStatus.REJECTED, self.clock.now_ns(), reason=str(err))
        except RetryableError as err:
            return self.after_transport_failure(order, err)
        self._stage("submitted", order)
        self.orders_sent += 1
        self.recorder.metrics.orders.labels("submitted").inc()
        self.recorder.log(logging.INFO, "submit", client_order_id=coid, symbol=order.symbol, side=order.side.value,
                          qty=order.qty, intent=order.intent.value, stop_loss=order.stop_loss,
                          take_profit=order.take_profit, reason=order.reason)
        return update

    def after_transport_failure(self, order: OrderRequest, err: RetryableError) -> OrderUpdate:
        """What an order becomes when the adapter's own retries gave up on its submit: REJECTED when the
        adapter proves the broker never got it (``OrderNotSent``); else the broker's status when it has the
        order after all (looked up by id), else UNKNOWN (``resolve_unknown`` finds it or halts)."""
        coid = order.client_order_id
        if isinstance(err, OrderNotSent):
            self.recorder.log(logging.WARNING, "submit_failed", client_order_id=coid, reason=str(err))
            return OrderUpdate(coid, order.symbol, OrderStatus.REJECTED, self.clock.now_ns(), reason=f"not sent: {err}")
        try:
            known = self.broker.order_status(coid)
        except RetryableError:
            known = None
        if known is not None:
            return known
        return self._unknown(order, f"no answer ({err})")

    def _unknown(self, order: OrderRequest, why: str) -> OrderUpdate:
        coid = order.client_order_id
        now = self.clock.now_ns()
        self._polled[coid] = now
        self._open.setdefault(coid, order)
        self.recorder.log(logging.WARNING, "submit_unknown", client_order_id=coid, reason=why)
        self.recorder.risk([RiskEvent(ts=now, kind="order_unknown", reason=f"order {coid}: {why}; it may be at the "
                                      "broker: looking it up by id, never resent", state=self.risk.state,
                                      symbol=order.symbol, key=f"order_unknown:{coid}")])
        return OrderUpdate(coid, order.symbol, OrderStatus.UNKNOWN, now, reason=f"outcome unknown: {why}")

    def resolve_unknown(self, now: int) -> list[RiskEvent]:
        """Look the UNKNOWN orders up at the broker (each at most every ``poll_s``); see the module docstring.
        Returns the risk events (halts, expiries) for the caller to record."""
        events: list[RiskEvent] = []
        for row in self.journal.orders([OrderStatus.UNKNOWN]):
            coid, sym = row["client_order_id"], row["symbol"]
            if now - self._polled.get(coid, 0) < self.poll_s * NS_PER_SECOND:
                continue
            self._polled[coid] = now
            try:
                found = self.broker.order_status(coid)
            except RetryableError as err:
                self.recorder.log(logging.WARNING, "unknown_lookup_failed", client_order_id=coid, reason=str(err))
                found = None
            if found is not None:
                self.apply(found, adopt=True)
                self._polled.pop(coid, None)
                events += self.risk.set_condition(f"unresolved:{coid}", None, f"order {coid} found at the broker "
                                                  f"({found.status.value})", now, kind="order_unknown", symbol=sym)
                continue
            age = (now - int(row["sent_ns"] or row["updated_ns"])) / NS_PER_SECOND
            if age >= self.halt_s:
                events += self.risk.set_condition(f"unresolved:{coid}", RiskState.HALTED,
                                                  f"order {coid} ({sym}) sent {age:.0f}s ago is neither in the "
                                                  "broker's order book nor its trade book", now,
                                                  kind="order_unknown", symbol=sym)
            if age >= self.expire_s:
                self.journal.expire_order(coid, f"not at the broker after {age:.0f}s of looking it up", now)
                self._open.pop(coid, None)
                self._polled.pop(coid, None)
        return events

    def flatten_attempt(self, symbol: str, bar_ts: int, now: int, backoff_s: float) -> int | None:
        """The attempt number for a new flatten of ``symbol`` keyed on bar ``bar_ts`` (0: the first), or None
        while the last one is working or its back-off (``backoff_s`` doubling per refusal, at most 60 s) runs."""
        tried = self.journal.orders_of(symbol, bar_ts, "flatten")
        if not tried:
            return 0
        last = tried[-1]
        if not OrderStatus(last["status"]).terminal:
            return None
        if last["status"] == OrderStatus.FILLED.value:
            return len(tried)
        wait = min(backoff_s * 2 ** (len(tried) - 1), 60.0)
        return len(tried) if now - int(last["updated_ns"]) >= wait * NS_PER_SECOND else None

    def cancel(self, client_order_id: str, now: int, why: str) -> None:
        """Cancel one working order (deferred to the next event when the order-rate limit is reached)."""
        if not self.risk.limiter.allow(now):
            self.recorder.log(logging.WARNING, "cancel_deferred", client_order_id=client_order_id,
                              reason="order rate limit")
            return
        self.risk.limiter.record(now)
        try:
            u = self.broker.cancel(client_order_id)
        except (RejectedError, RetryableError) as err:
            self.recorder.log(logging.WARNING, "cancel_failed", client_order_id=client_order_id, reason=str(err))
            return
        self.apply(u)
        self.recorder.log(logging.INFO, "cancel", client_order_id=client_order_id, reason=why, status=u.status.value)

    def cancel_entries(self, now: int, why: str) -> None:
        """Cancel every working entry (no new exposure); exits stay."""
        if not any(not o.reduce_only for o in self._open.values()):
            return
        for row in self.journal.orders([OrderStatus.ACCEPTED]):
            if not row["reduce_only"]:
                self.cancel(row["client_order_id"], now, why)

    def close_all(self, now: int, why: str) -> None:
        """The run ends: orders never sent expire, working ones are cancelled (nothing can fill them)."""
        for row in self.journal.orders(WORKING):
            if row["status"] == OrderStatus.PENDING_SUBMIT.value:
                self.journal.expire_order(row["client_order_id"], f"{why} before it was sent", now)
            else:
                self.cancel(row["client_order_id"], now, why)

    # ------------------------------------------------------------------ the broker's news
    def apply_events(self, events: Iterable[OrderUpdate | Fill], now: int) -> None:
        """The broker's events since the last poll, each journaled once."""
        for ev in events:
            if isinstance(ev, Fill):
                self.apply_fill(ev, now)
            else:
                self.apply(ev)

    def apply_fill(self, f: Fill, now: int) -> None:
        if self.journal.record_fill(f, now):
            self.fills_recorded += 1
            self.recorder.metrics.fills.labels(f.symbol, f.kind).inc()
            self.recorder.log(logging.INFO, "fill", fill_id=f.fill_id, client_order_id=f.client_order_id,
                              symbol=f.symbol, side=f.side.value, qty=f.qty, price=f.price, costs=f.costs,
                              kind=f.kind, realized_pnl=f.realized_pnl)

    def apply(self, u: OrderUpdate, *, adopt: bool = False) -> None:
        """An order's new status; ``adopt``: the broker's status replaces the journal's whatever it was
        (reconciliation), else a terminal status is never replaced by a working one."""
        if u.status.terminal:
            self._open.pop(u.client_order_id, None)
        if not (self.journal.update_order(u) or (adopt and self.journal.force_order_status(u))):
            return
        self.recorder.metrics.orders.labels(u.status.value).inc()
        self.recorder.log(logging.INFO, "order", client_order_id=u.client_order_id, symbol=u.symbol,
                          status=u.status.value, filled_qty=u.filled_qty, avg_price=u.avg_price, reason=u.reason)
        if u.status is OrderStatus.REJECTED:
            self.recorder.metrics.rejections.labels("broker", "rejected").inc()
            self.recorder.risk([RiskEvent(ts=u.ts, kind="broker_reject", reason=u.reason or "rejected",
                                          state=self.risk.state, symbol=u.symbol,
                                          details={"client_order_id": u.client_order_id},
                                          key=f"broker_reject:{u.client_order_id}")])

    def apply_reconciliation(self, plan: Reconciliation, now: int) -> None:
        """The order side of a start-up reconciliation: adopted statuses, expiries, recovered fills."""
        for u in plan.adopt:
            self.apply(u, adopt=True)
        for e in plan.expire:
            self.journal.expire_order(e.client_order_id, e.reason, now)
        for f in plan.new_fills:
            if self.journal.record_fill(f, now):
                self.recorder.metrics.fills.labels(f.symbol, f.kind).inc()

    def _stage(self, stage: str, order: OrderRequest) -> None:
        if self.on_stage is not None:
            self.on_stage(stage, order.symbol, order.bar_ts)


__all__ = ["OrderManager", "WORKING"]
