"""The live loop: feed -> BarBuilder -> feature stream -> policy -> RiskEngine -> ExecutionClient.

```python
loop = TradingLoop(feed=ReplayFeed(bars), broker=PaperBroker(engine, [symbol], "paper.db", clock=feed.clock),
                   policy=my_policy, journal=Journal("journal.db", session="paper-1"),
                   features={symbol: StreamFeatures(pipeline)}, engine=engine, risk=RiskConfig())
summary = loop.run()            # reconcile, then trade until the feed ends
```

Per closed bar (a ``Bar`` from the feed, or one the ``BarBuilder`` closed from ticks or on its timer):

1. the symbol's feature source takes it (features and the raw ATR);
2. a simulated broker (the paper broker) fills the orders decided at the previous bar through the
   engine;
3. in one journal transaction: the bar; the broker's fills and order updates (idempotently); the risk
   engine's update (session roll-over, daily loss, drawdown, data freshness) and any manual command
   from the journal (``tradebot live halt``); the policy's action -- it is called with the observation
   the env would give at this bar: the features, then ``side, upnl_atr, bars_in_trade, time_left``
   (``tradebot.envs.trading_env.POSITION_FEATURES``, by the engine's own ``write_obs``), and not during the
   feature warm-up (HOLD) -- the risk engine's decision (accept, resize, veto, or override with a
   flatten) and its order, written ahead as ``PENDING_SUBMIT``;
4. the order is sent once (``_submit_once``);
5. in a second transaction: the broker's answer, positions, equity, the risk state, a feature-stream
   checkpoint every ``checkpoint_every`` bars, and the bar marked done.

``Heartbeat`` events (time passing without data) close bars on the timer, check data freshness,
apply manual commands and flatten when the risk engine says so.

Start-up (``start``) restores the risk state, reconciles the journal with the broker's order, fill
and position reports (the broker is authoritative; every difference is a risk event), rebuilds the
feature streams from their checkpoint plus the journaled bars, finishes a bar that a crash left
half-processed (re-using its journaled decision and order id, so nothing is sent twice), and only
then subscribes to the feed, resuming after the last journaled bar.

A policy that needs the bar it decides on (a replayed schedule) reads ``current_bar()``. The
policy's own recurrent state is not journaled: after a restart it starts afresh.
"""

from __future__ import annotations

import bisect
import contextvars
import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from pydantic import Field

from tradebot.envs.engine import Action, EngineConfig
from tradebot.envs.trading_env import observation_at
from tradebot.features.bars import Bars
from tradebot.features.pipeline import FeaturePipeline, FeatureStream
from tradebot.live.bars import BarBuilder
from tradebot.live.journal import Journal
from tradebot.live.logs import get_logger, log_event
from tradebot.live.market import engine_row
from tradebot.live.prometheus import LiveMetrics
from tradebot.live.ports import (
    NS_PER_SECOND,
    AccountReport,
    Bar,
    DataFeed,
    ExecutionClient,
    Fill,
    Heartbeat,
    OrderRequest,
    OrderStatus,
    OrderUpdate,
    PositionReport,
    RiskEvent,
    RiskState,
    SimulatedVenue,
    Tick,
    Verdict,
)
from tradebot.live.risk import RiskConfig, RiskEngine
from tradebot.core.config import FrozenConfig
from tradebot.core.errors import FatalError, RejectedError, RetryableError, UserInputError

_CURRENT_BAR: contextvars.ContextVar[Bar | None] = contextvars.ContextVar("tradebot_live_bar", default=None)
STAGES = ("bar_received", "broker_processed", "decided", "submitted", "bar_done")
_WORKING = (OrderStatus.PENDING_SUBMIT, OrderStatus.ACCEPTED)


def current_bar() -> Bar | None:
    """The bar the policy is being asked about (inside a policy call), else None."""
    return _CURRENT_BAR.get()


class LoopConfig(FrozenConfig):
    """Loop settings (YAML section ``loop`` of the live config)."""

    session: str = Field("paper", min_length=1, description="session name; client order ids derive from it")
    model_version: str | None = Field(None, description="recorded with every decision (default: the policy's)")
    checkpoint_every: int = Field(75, ge=1, description="bars between feature-stream checkpoints in the journal")
    bar_grace_s: float = Field(2.0, ge=0, description="a tick-built bar closes this long after its end")
    max_submit_retries: int = Field(3, ge=0, description="retries of a submit that failed temporarily")
    retry_backoff_s: float = Field(0.5, ge=0, description="first back-off; doubles each retry")


class FeatureSource(Protocol):
    """Per-symbol features for the policy: ``update(bar)`` returns the row; ``atr`` is the bar's raw ATR."""

    feature_names: tuple[str, ...]
    atr: float
    ready: bool
    last_ts: int | None

    def update(self, bar: Bar) -> np.ndarray: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class StreamFeatures:
    """The project's incremental ``FeatureStream`` as a ``FeatureSource`` (optionally primed with history)."""

    def __init__(self, pipeline: FeaturePipeline, history: Bars | None = None):
        self.pipeline = pipeline
        self.stream: FeatureStream = pipeline.stream(history=history)
        self.feature_names = pipeline.feature_names
        self.last_ts: int | None = int(history.index[-1].value) if history is not None and len(history) else None

    @property
    def atr(self) -> float:
        return self.stream.atr

    @property
    def ready(self) -> bool:
        return self.stream.ready

    def update(self, bar: Bar) -> np.ndarray:
        row = self.stream.update(bar.ts, bar.open, bar.high, bar.low, bar.close, bar.volume)
        self.last_ts = bar.ts
        return row

    def state_dict(self) -> dict[str, Any]:
        return {"stream": self.stream.state_dict(), "last_ts": self.last_ts}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state["stream"])
        self.last_ts = state["last_ts"]


@dataclass(frozen=True)
class LoopSummary:
    bars: int
    decisions: int
    orders: int
    fills: int
    equity: float
    risk_state: str
    resumed_bars: int  # half-processed bars finished after a restart


class TradingLoop:
    """See the module docstring."""

    def __init__(self, *, feed: DataFeed, broker: ExecutionClient, policy: Callable[[str, np.ndarray], Any],
                 journal: Journal, features: Mapping[str, FeatureSource], engine: EngineConfig,
                 risk: RiskConfig | None = None, config: LoopConfig | None = None, timeframe: str | None = None,
                 metrics: LiveMetrics | None = None, logger: logging.Logger | None = None,
                 on_stage: Callable[[str, str, int], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        if not features:
            raise UserInputError("the loop needs at least one symbol (a feature source per symbol)")
        self.feed = feed
        self.broker = broker
        self.policy = policy
        self.journal = journal
        self.features = dict(features)
        self.symbols = tuple(self.features)
        self.engine = engine
        self.config = config or LoopConfig()
        self.timeframe = timeframe or getattr(feed, "timeframe", None)
        if self.timeframe is None:
            raise UserInputError("the loop needs the bar size (timeframe=, e.g. '5m')")
        self.risk = RiskEngine(risk or RiskConfig(), engine, self.timeframe)
        self.builder = BarBuilder(self.timeframe, self.config.bar_grace_s)
        self.metrics = metrics or LiveMetrics()
        self.log = logger or get_logger()
        self.on_stage = on_stage
        self._sleep = sleep
        self.model_version = (self.config.model_version or getattr(policy, "version", None)
                              or getattr(policy, "source", None) or type(policy).__name__)
        self._positions: dict[str, PositionReport] = {}
        self._account: AccountReport | None = None
        self._bar_times: dict[str, list[int]] = {s: [] for s in self.symbols}
        self._last_done: dict[str, int] = {}
        self._since_ckpt: dict[str, int] = {s: 0 for s in self.symbols}
        self._control_applied = 0
        self._open_orders: dict[str, OrderRequest] = {}
        self._fresh: set[str] = set()  # orders this process wrote and has not sent yet (no need to ask the broker)
        self._journaled_positions: dict[str, PositionReport] | None = None
        self._journaled_control = -1
        self._started = False
        self._counts = {"bars": 0, "decisions": 0, "orders": 0, "fills": 0, "resumed": 0}
        self._last_state = RiskState.ACTIVE

    # ------------------------------------------------------------------------ helpers
    def _now(self) -> int:
        return self.feed.clock.now_ns()

    def _stage(self, stage: str, symbol: str, ts: int) -> None:
        if self.on_stage is not None:
            self.on_stage(stage, symbol, ts)

    def _event(self, level: int, event: str, **fields: Any) -> None:
        log_event(self.log, level, event, session=self.config.session, **fields)

    def _record_events(self, events: list[RiskEvent]) -> None:
        if not events:
            return
        self.journal.record_risk_events(events)
        for e in events:
            level = logging.WARNING if e.kind in ("daily_loss", "kill_switch", "fatal", "control", "reconcile") \
                else logging.INFO
            self._event(level, "risk", kind=e.kind, reason=e.reason, state=e.state.value, symbol=e.symbol,
                        details=dict(e.details))
            if e.kind == Verdict.VETO.value:
                self.metrics.rejections.labels("risk", str(e.details.get("code", "other"))).inc()

    def _working(self, symbol: str) -> OrderRequest | None:
        """The order working (or about to be sent) for ``symbol``, if any."""
        for o in self._open_orders.values():
            if o.symbol == symbol:
                return o
        return None

    def _load_open_orders(self) -> None:
        self._open_orders = {}
        for row in self.journal.orders(_WORKING):
            req = self.journal.order_request(row["client_order_id"])
            if req is not None:
                self._open_orders[req.client_order_id] = req

    def _sync_broker(self) -> None:
        """Journal the broker's new events; refresh positions and the account."""
        now = self._now()
        for ev in self.broker.poll_events():
            if isinstance(ev, Fill):
                self._on_fill(ev, now)
            else:
                self._on_update(ev)
        self._positions = {p.symbol: p for p in self.broker.position_reports()}
        self._account = self.broker.account_report()

    def _on_fill(self, f: Fill, now: int) -> None:
        if self.journal.record_fill(f, now):
            self._counts["fills"] += 1
            self.metrics.fills.labels(f.symbol, f.kind).inc()
            self._event(logging.INFO, "fill", fill_id=f.fill_id, client_order_id=f.client_order_id, symbol=f.symbol,
                        side=f.side.value, qty=f.qty, price=f.price, costs=f.costs, kind=f.kind,
                        realized_pnl=f.realized_pnl)

    def _on_update(self, u: OrderUpdate, force: bool = False) -> None:
        if u.status.terminal:
            self._open_orders.pop(u.client_order_id, None)
        if self.journal.update_order(u) or (force and self._force_update(u)):
            self.metrics.orders.labels(u.status.value).inc()
            self._event(logging.INFO, "order", client_order_id=u.client_order_id, symbol=u.symbol,
                        status=u.status.value, filled_qty=u.filled_qty, avg_price=u.avg_price, reason=u.reason)
            if u.status is OrderStatus.REJECTED:
                self.metrics.rejections.labels("broker", "rejected").inc()
                self._record_events([RiskEvent(ts=u.ts, kind="broker_reject", reason=u.reason or "rejected",
                                               state=self.risk.state, symbol=u.symbol,
                                               details={"client_order_id": u.client_order_id},
                                               key=f"broker_reject:{u.client_order_id}")])

    def _force_update(self, u: OrderUpdate) -> bool:
        row = self.journal.order(u.client_order_id)
        if row is None or row["status"] == u.status.value:
            return False
        self.journal.db.execute("UPDATE orders SET status=?, filled_qty=?, avg_price=?, reason=?, updated_ns=?, "
                                "broker_order_id=COALESCE(?, broker_order_id) WHERE client_order_id=?",
                                (u.status.value, u.filled_qty, None if math.isnan(u.avg_price) else u.avg_price,
                                 u.reason, u.ts, u.broker_order_id, u.client_order_id))
        return True

    # ----------------------------------------------------------------------- start-up
    def start(self) -> None:
        """Connect, restore, reconcile with the broker, rebuild features, finish a half-done bar."""
        if self._started:
            return
        j = self.journal
        if j.session is None:
            j.set_meta("session", self.config.session)
        elif j.session != self.config.session:
            raise UserInputError(f"{j.path}: journal of session {j.session!r}, the loop is configured for "
                                 f"{self.config.session!r}")
        for key, value in (("timeframe", self.timeframe), ("symbols", ",".join(self.symbols))):
            stored = j.get_meta(key)
            if stored is None:
                j.set_meta(key, value)
            elif stored != value:
                raise UserInputError(f"{j.path}: journal was written for {key} {stored}, not {value}; "
                                     "use a new journal for another set-up")
        # a broker without state of its own (Fyers) learns the brackets of the orders it will report
        self.broker.restore_requests(j.order_requests())
        self.broker.connect()
        saved = j.load_state("risk")
        if saved is not None:
            self.risk.load_state_dict(saved)
        else:
            self.risk.start(self.broker.account_report().equity)
        self._control_applied = int(j.get_meta("control_applied") or 0)
        self._last_state = self.risk.state
        self.metrics.risk_state.state(self._last_state.value)
        self.reconcile()
        for sym, src in self.features.items():
            ckpt = j.load_state(f"features:{sym}")
            if ckpt is not None:
                src.load_state_dict(ckpt)
            for bar in j.bars(sym, done=True, after_ts=src.last_ts):
                src.update(bar)
            self._bar_times[sym] = [b.ts for b in j.bars(sym, done=True)]
            last = j.last_bar_ts(sym, done_only=True)
            if last is not None:
                self._last_done[sym] = last
            known = max((t for t in (src.last_ts, j.last_bar_ts(sym)) if t is not None), default=None)
            if known is not None:  # ticks of bars the history or the journal already has do not make bars again
                self.builder.mark_closed(sym, known)
        self._load_open_orders()
        self._started = True
        self._apply_pending_controls()  # a halt requested while the loop was down applies before trading
        for bar in j.undone_bars():  # a bar a crash left half-processed
            self._counts["resumed"] += 1
            self.process_bar(bar, resumed=True)
        self.feed.subscribe(self.symbols, after={s: t for s in self.symbols
                                                 if (t := j.last_bar_ts(s)) is not None})
        acct = self._account or self.broker.account_report()
        self._event(logging.INFO, "ready", symbols=list(self.symbols), equity=acct.equity,
                    risk_state=self.risk.state.value, positions={p.symbol: p.qty for p in self._positions.values()},
                    model_version=self.model_version)

    def reconcile(self) -> None:
        """Make the journal agree with the broker (orders, fills, positions); log every difference."""
        j = self.journal
        now = self._now()
        events: list[RiskEvent] = []
        reports = {u.client_order_id: u for u in self.broker.order_status_reports()}
        undone = {(b.symbol, b.ts) for b in j.undone_bars()}
        with j.transaction():
            for row in j.orders():
                coid, status = row["client_order_id"], OrderStatus(row["status"])
                rep = reports.get(coid)
                if rep is not None:
                    if rep.status.value != row["status"]:
                        events.append(RiskEvent(ts=now, kind="reconcile", reason=f"order {coid}: journal "
                                                f"{row['status']}, broker {rep.status.value}; the broker's status "
                                                "kept", state=self.risk.state, symbol=row["symbol"],
                                                key=f"reconcile:status:{coid}:{rep.status.value}"))
                        self._on_update(rep, force=True)
                elif status is OrderStatus.PENDING_SUBMIT:
                    if (row["symbol"], row["bar_ts"]) in undone:
                        continue  # sent (once) when its bar is finished below
                    j.expire_order(coid, "never reached the broker (the process stopped before sending it)", now)
                    events.append(RiskEvent(ts=now, kind="reconcile", reason=f"order {coid} never reached the broker; "
                                            "expired", state=self.risk.state, symbol=row["symbol"],
                                            key=f"reconcile:expired:{coid}"))
                elif status is OrderStatus.ACCEPTED:
                    j.expire_order(coid, "unknown to the broker at reconciliation", now)
                    events.append(RiskEvent(ts=now, kind="reconcile", reason=f"working order {coid} unknown to the "
                                            "broker; expired", state=self.risk.state, symbol=row["symbol"],
                                            key=f"reconcile:unknown:{coid}"))
            for coid, rep in reports.items():
                if j.order(coid) is None:
                    events.append(RiskEvent(ts=now, kind="reconcile", reason=f"broker order {coid} "
                                            f"({rep.status.value}) is not in the journal (placed outside this loop)",
                                            state=self.risk.state, symbol=rep.symbol, key=f"reconcile:external:{coid}"))
            recovered = 0
            for f in self.broker.fill_reports():
                if j.record_fill(f, now):
                    recovered += 1
                    self.metrics.fills.labels(f.symbol, f.kind).inc()
            if recovered:
                events.append(RiskEvent(ts=now, kind="reconcile", reason=f"{recovered} fill(s) recovered from the "
                                        "broker's reports", state=self.risk.state, key=f"reconcile:fills:{now}"))
            before = {s: p.qty for s, p in j.positions().items()}
            self._positions = {p.symbol: p for p in self.broker.position_reports()}
            after = {s: p.qty for s, p in self._positions.items()}
            if before != after:
                events.append(RiskEvent(ts=now, kind="reconcile", reason=f"positions corrected from the broker: "
                                        f"journal {before}, broker {after}", state=self.risk.state,
                                        key=f"reconcile:positions:{now}"))
            j.set_positions(self._positions.values(), now)
            self._record_events(events)
        self.broker.poll_events()  # everything they said is in the reports just read
        self._account = self.broker.account_report()
        self._event(logging.INFO, "reconciled", orders=len(reports), fills_recovered=recovered,
                    findings=len(events), positions=after)

    # -------------------------------------------------------------------- the loop
    def run(self, max_events: int | None = None) -> LoopSummary:
        """Start, then handle feed events until the feed ends (then ``finish``) or ``max_events``."""
        self.start()
        n = 0
        ended = True
        for event in self.feed:
            self.handle(event)
            n += 1
            if max_events is not None and n >= max_events:
                ended = False
                break
        if ended:
            self.finish()
        return self.summary()

    def handle(self, event: Bar | Tick | Heartbeat) -> None:
        if isinstance(event, Bar):
            self.process_bar(event)
        elif isinstance(event, Tick):
            if event.symbol in self.features:
                for bar in self.builder.on_tick(event):
                    self.process_bar(bar)
        elif isinstance(event, Heartbeat):
            self.heartbeat(event.ts)

    def _apply_controls(self, now: int) -> list[RiskEvent]:
        events: list[RiskEvent] = []
        for cid, command, reason in self.journal.controls_after(self._control_applied):
            events += self.risk.apply_control(command, reason, now)
            self._control_applied = cid
            self._event(logging.WARNING, "control", command=command, reason=reason, id=cid)
        return events

    def _apply_pending_controls(self) -> None:
        now = self._now()
        with self.journal.transaction():
            events = self._apply_controls(now)
            self._record_events(events)
            self._after_state_change(now)
            self.journal.save_state("risk", self.risk.state_dict())
            self.journal.set_meta("control_applied", str(self._control_applied))

    def _after_state_change(self, now: int) -> None:
        """Publish the risk state; while it is not ACTIVE, cancel working entries (no new exposure;
        one the rate limit defers is cancelled at the next event)."""
        state = self.risk.state
        if state is not self._last_state:
            self.metrics.risk_state.state(state.value)
            self._last_state = state
        if state is not RiskState.ACTIVE and any(not o.reduce_only for o in self._open_orders.values()):
            for row in self.journal.orders([OrderStatus.ACCEPTED]):
                if not row["reduce_only"]:
                    self._cancel(row["client_order_id"], now, f"risk state {state.value}")

    def _cancel(self, coid: str, now: int, why: str) -> None:
        if not self.risk.limiter.allow(now):
            self._event(logging.WARNING, "cancel_deferred", client_order_id=coid, reason="order rate limit")
            return
        self.risk.limiter.record(now)
        try:
            u = self.broker.cancel(coid)
        except (RejectedError, RetryableError) as err:
            self._event(logging.WARNING, "cancel_failed", client_order_id=coid, reason=str(err))
            return
        self._on_update(u)
        self._event(logging.INFO, "cancel", client_order_id=coid, reason=why, status=u.status.value)

    def process_bar(self, bar: Bar, resumed: bool = False) -> None:
        """One closed bar through the whole chain (``resumed``: a bar a crash left half-done)."""
        if not self._started:
            raise RuntimeError("call start() (or run()) before feeding bars")
        sym = bar.symbol
        src = self.features.get(sym)
        if src is None:
            return
        if bar.ts <= self._last_done.get(sym, -1):
            return  # delivered again: already done
        t0 = time.perf_counter()
        j = self.journal
        now = self._now()
        self._stage("bar_received", sym, bar.ts)
        row = src.update(bar)
        atr = src.atr
        times = self._bar_times[sym]
        if not times or times[-1] < bar.ts:
            times.append(bar.ts)
        if isinstance(self.broker, SimulatedVenue):
            self.broker.on_bar(bar, atr)
        self._stage("broker_processed", sym, bar.ts)
        with j.transaction():  # the bar, the broker's news, the risk update and the decision: one commit
            j.record_bar(bar, now)
            self._sync_broker()
            account = self._account
            events = self.risk.on_bar_close(sym, bar, account.equity, atr, now)
            events += self._apply_controls(now)
            self._after_state_change(now)
            position = self._positions.get(sym)
            existing = j.decision(sym, bar.ts) if resumed else None
            if existing is None:
                obs = self.observation(sym, row, bar, atr)
                proposed = self._act(sym, obs, bar) if src.ready else int(Action.HOLD)
                decision, devents = self.risk.evaluate(sym, bar, proposed, position=position,
                                                       working=self._working(sym), equity=account.equity, atr=atr,
                                                       now=now, session=self.config.session, positions=self._positions)
                j.record_decision(decision, decided_ns=now, model_version=self.model_version,
                                  features_hash=hashlib.blake2b(obs.tobytes(), digest_size=8).hexdigest())
                self._record_events(events + devents)
                order, proposed_a, final_a = decision.order, decision.proposed, decision.final
                self._counts["decisions"] += 1
                self._event(logging.DEBUG, "decision", symbol=sym, bar=bar.ts, proposed=Action(proposed_a).name,
                            final=Action(final_a).name, verdict=decision.verdict.value, reasons=list(decision.reasons))
            else:  # decided before a crash: the same decision, the same order id
                self._record_events(events)
                coid = existing["client_order_id"]
                row = j.order(coid) if coid else None
                # an order that ended meanwhile (reconciliation found it filled / cancelled) is not working
                order = j.order_request(coid) if row is not None and not OrderStatus(row["status"]).terminal else None
                proposed_a, final_a = int(existing["action"]), int(existing["final_action"])
            if order is not None:
                if existing is None:
                    self._fresh.add(order.client_order_id)
                self._open_orders.setdefault(order.client_order_id, order)
        self._stage("decided", sym, bar.ts)
        self.metrics.actions.labels(sym, "policy", Action(proposed_a).name).inc()
        self.metrics.actions.labels(sym, "final", Action(final_a).name).inc()
        answered: OrderUpdate | None = None
        if order is not None:
            answered = self._submit_once(order, now)
            self.metrics.bar_to_order.observe(time.perf_counter() - t0)
        with j.transaction():
            if answered is not None:
                self._on_update(answered)
            self._sync_broker()
            self._finish_bar(bar, now)
        self._stage("bar_done", sym, bar.ts)

    def _finish_bar(self, bar: Bar, now: int) -> None:
        j = self.journal
        sym = bar.symbol
        acct = self._account
        e0, peak = self.risk.day_start_equity, self.risk.peak_equity
        day_pnl = acct.equity - e0
        drawdown = 1.0 - acct.equity / peak if peak > 0 else 0.0
        self._since_ckpt[sym] += 1
        with j.transaction():
            if self._positions != self._journaled_positions:
                j.set_positions(self._positions.values(), now)
                self._journaled_positions = dict(self._positions)
            j.record_equity(bar.ts, acct, day_pnl, drawdown, self.risk.state.value)
            j.save_state("risk", self.risk.state_dict())
            if self._control_applied != self._journaled_control:
                j.set_meta("control_applied", str(self._control_applied))
                self._journaled_control = self._control_applied
            if self._since_ckpt[sym] >= self.config.checkpoint_every or bar.last_of_session or bar.final:
                j.save_state(f"features:{sym}", self.features[sym].state_dict())
                self._since_ckpt[sym] = 0
            j.mark_bar_done(sym, bar.ts)
        self._last_done[sym] = bar.ts
        self._counts["bars"] += 1
        m = self.metrics
        m.bars.labels(sym).inc()
        m.equity.set(acct.equity)
        m.day_pnl.set(day_pnl)
        m.realized_pnl.set(acct.realized_pnl)
        m.drawdown.set(drawdown)
        for s in self.symbols:
            p = self._positions.get(s)
            m.position.labels(s).set(p.qty if p else 0.0)
        m.staleness.labels(sym).set(max(0.0, (now - bar.end) / NS_PER_SECOND))

    def observation(self, symbol: str, features: np.ndarray, bar: Bar, atr: float) -> np.ndarray:
        """The env's observation at this bar: features, then side, upnl_atr, bars_in_trade, time_left."""
        data = engine_row(bar, atr, self.engine)
        p = self._positions.get(symbol)
        if p is None or p.qty == 0.0:
            return observation_at(features, data)
        times = self._bar_times[symbol]
        held = bisect.bisect_right(times, bar.ts) - bisect.bisect_right(times, p.opened_ts)
        return observation_at(features, data, p.qty, p.avg_price, held)

    def _act(self, symbol: str, obs: np.ndarray, bar: Bar) -> int:
        token = _CURRENT_BAR.set(bar)
        t0 = time.perf_counter()
        try:
            out = self.policy(symbol, obs)
        except Exception as err:  # a policy failure must not stop the loop that guards the positions
            self.log.error("policy failed", exc_info=True, extra={"event": "policy_error", "fields": {"symbol": symbol}})
            self._record_events([RiskEvent(ts=self._now(), kind="policy_error", reason=f"{type(err).__name__}: {err}",
                                           state=self.risk.state, symbol=symbol, key=f"policy_error:{symbol}:{bar.ts}")])
            return int(Action.HOLD)
        finally:
            self.metrics.inference.observe(time.perf_counter() - t0)
            _CURRENT_BAR.reset(token)
        action = out[0] if isinstance(out, tuple) else out
        try:
            return int(Action(int(action)))
        except (ValueError, TypeError):
            self._record_events([RiskEvent(ts=self._now(), kind="policy_error", reason=f"policy returned {action!r}, "
                                           "not an action 0..4", state=self.risk.state, symbol=symbol,
                                           key=f"policy_error:{symbol}:{bar.ts}")])
            return int(Action.HOLD)

    # ----------------------------------------------------------------- sending orders
    def _submit_once(self, order: OrderRequest, now: int) -> OrderUpdate | None:
        """Send ``order`` unless it was sent before; returns the broker's answer for the caller to
        journal (None when there is nothing new). The order row (``PENDING_SUBMIT``) is written before;
        an order written by an earlier process is first looked up at the broker: it may have gone out
        just before a crash."""
        j = self.journal
        coid = order.client_order_id
        if coid not in self._fresh:  # (an order this process wrote is PENDING_SUBMIT and unsent)
            row = j.order(coid)
            if row is None:
                j.insert_order(order)
            elif row["status"] != OrderStatus.PENDING_SUBMIT.value:
                return None  # sent and answered before
            else:
                known = self.broker.order_status(coid)
                if known is not None:
                    return known
        self._fresh.discard(coid)  # from here on it counts as sent: never again
        self._open_orders.setdefault(coid, order)
        delay = self.config.retry_backoff_s
        for attempt in range(self.config.max_submit_retries + 1):
            t = self._now() if attempt else now
            if not self.risk.limiter.allow(t):  # every call to the broker counts against the rate limit
                self._record_events([RiskEvent(ts=t, kind="rate_limited", reason=f"order {coid} not sent: order rate "
                                               "limit", state=self.risk.state, symbol=order.symbol,
                                               key=f"rate_limited:{coid}:{attempt}")])
                return OrderUpdate(coid, order.symbol, OrderStatus.EXPIRED, t, reason="not sent: order rate limit")
            self.risk.limiter.record(t)
            j.note_submit(coid)
            try:
                update = self.broker.submit(order)
            except RejectedError as err:
                self._stage("submitted", order.symbol, order.bar_ts)
                return OrderUpdate(coid, order.symbol, OrderStatus.REJECTED, self._now(), reason=str(err))
            except RetryableError as err:
                known = self.broker.order_status(coid)
                if known is not None:
                    return known
                if attempt == self.config.max_submit_retries:
                    return OrderUpdate(coid, order.symbol, OrderStatus.REJECTED, self._now(),
                                       reason=f"not sent after {attempt + 1} attempts: {err}")
                self._event(logging.WARNING, "submit_retry", client_order_id=coid, attempt=attempt + 1, reason=str(err))
                self._sleep(err.retry_after if err.retry_after is not None else delay)
                delay *= 2
                continue
            except FatalError as err:
                self._fatal(str(err))
                raise
            self._stage("submitted", order.symbol, order.bar_ts)
            self._counts["orders"] += 1
            self.metrics.orders.labels("submitted").inc()
            self._event(logging.INFO, "submit", client_order_id=coid, symbol=order.symbol, side=order.side.value,
                        qty=order.qty, intent=order.intent.value, stop_loss=order.stop_loss,
                        take_profit=order.take_profit, reason=order.reason)
            return update
        return None

    def _fatal(self, reason: str) -> None:
        now = self._now()
        with self.journal.transaction():
            self._record_events(self.risk.on_fatal(reason, now))
            self.journal.save_state("risk", self.risk.state_dict())
        self.metrics.risk_state.state(self.risk.state.value)
        self._event(logging.CRITICAL, "fatal", reason=reason)

    # ------------------------------------------------------------------ between bars
    def heartbeat(self, now: int) -> None:
        """Timer work: close due bars, freshness, manual commands, flatten when required."""
        if not self._started:
            raise RuntimeError("call start() (or run()) before feeding heartbeats")
        for bar in self.builder.on_time(now):
            self.process_bar(bar)
        events = self.risk.on_heartbeat(now) + self._apply_controls(now)
        self._after_state_change(now)
        for sym in self.symbols:
            overdue = self.risk.overdue_s(sym, now)
            last = self.risk.last_bar_end.get(sym)
            if last is not None:
                self.metrics.staleness.labels(sym).set(max(0.0, (now - last) / NS_PER_SECOND))
            pos = self._positions.get(sym)
            reason = self.risk.flatten_reason(sym, pos, None, now)
            if reason is None or self._working(sym) is not None or not self.risk.limiter.allow(now):
                continue
            last_ts = self._last_done.get(sym, 0)
            order = self.risk.flatten_order(sym, pos, last_ts, reason, now, self.config.session)
            events.append(RiskEvent(ts=now, kind=Verdict.OVERRIDE.value, reason=reason, state=self.risk.state,
                                    symbol=sym, details={"overdue_s": overdue}, key=f"override:{sym}:{last_ts}:hb"))
            with self.journal.transaction():
                if self.journal.insert_order(order):
                    self._fresh.add(order.client_order_id)
                self._record_events(events)
            events = []
            answered = self._submit_once(order, now)
            if answered is not None:
                self._on_update(answered)
        with self.journal.transaction():
            self._record_events(events)
            self._sync_broker()
            self.journal.save_state("risk", self.risk.state_dict())
            self.journal.set_meta("control_applied", str(self._control_applied))

    def finish(self, cancel_working: bool = True) -> None:
        """End of the feed: cancel what is still working (nothing can fill it), save, disconnect."""
        self._apply_pending_controls()
        now = self._now()
        if cancel_working:
            for row in self.journal.orders(_WORKING):
                if row["status"] == OrderStatus.PENDING_SUBMIT.value:
                    self.journal.expire_order(row["client_order_id"], "session ended before it was sent", now)
                else:
                    self._cancel(row["client_order_id"], now, "session ended")
        self._sync_broker()
        with self.journal.transaction():
            self.journal.set_positions(self._positions.values(), now)
            self.journal.save_state("risk", self.risk.state_dict())
        self._event(logging.INFO, "finished", **{k: v for k, v in self.summary().__dict__.items()})
        self.broker.disconnect()

    def summary(self) -> LoopSummary:
        acct = self._account
        return LoopSummary(bars=self._counts["bars"], decisions=self._counts["decisions"], orders=self._counts["orders"],
                           fills=self._counts["fills"], equity=acct.equity if acct else math.nan,
                           risk_state=self.risk.state.value, resumed_bars=self._counts["resumed"])
